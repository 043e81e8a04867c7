"""The recipe model, the shipped templates and make_recipe."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cruncher.errors import BadInputError
from cruncher.recipes import (TEMPLATES, Primitive, Recipe, RecipeError, load_template, make_recipe,
                              recipe_name)
from cruncher.recipes import queue

QUICKCUBE = [
    ("Load Wavelength Calibration", {"CalibrationFile": "AUTOMATIC"}),
    ("Subtract Dark Background", {"CalibrationFile": "AUTOMATIC", "Save": "0"}),
    ("Update Spot Shifts for Flexure", {"method": "Lookup"}),
    ("Interpolate bad pixels in 2D frame", {"method": "vertical"}),
    ("Assemble Spectral Datacube", {}),
    ("Interpolate Wavelength Axis", {"Spectralchannels": "37"}),
    ("Interpolate bad pixels in cube", {}),
    ("Correct Distortion", {"Save": "1"}),
    ("Measure satellite spot locations", {"search_window": "20", "highpass": "1"}),
]
EXPECTED_TEMPLATES = {
    "quickcube": ("Quicklook Automatic Datacube Extraction", "SpectralScience", "quickcube",
                  QUICKCUBE),
    "spectral_science": ("Spectral Science Datacube", "SpectralScience", "spdc", QUICKCUBE + [
        ("Filter datacube spatially", {"hp_boxsize": "15", "Save": "0"}),
        ("Measure satellite spot peak fluxes", {"gauss_fit": "1", "ap_rad": "7"}),
        ("Measure Contrast", {"Save": "1"}),
    ]),
    "dark": ("Dark", "Calibration", "dark", [("Combine 2D dark images",
                                              {"Method": "median", "Save": "1"})]),
    "quick_wavecal": ("Quick Wavelength Solution", "Calibration", "quickwavecal", [
        ("Load Wavelength Calibration", {"CalibrationFile": "AUTOMATIC"}),
        ("Subtract Dark Background", {"CalibrationFile": "AUTOMATIC", "Save": "0"}),
        ("Interpolate bad pixels in 2D frame", {"method": "vertical"}),
        ("Quick Wavelength Solution Update", {"Save": "1"}),
    ]),
}

EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<recipe Name="Quicklook Automatic Datacube Extraction" ReductionType="SpectralScience" ShortName="quickcube">
<dataset InputDir="/data/raw/131118" OutputDir="/data/reduced/131118">
   <fits FileName="S20131118S0064.fits" />
</dataset>
<primitive name="Load Wavelength Calibration" CalibrationFile="AUTOMATIC" />
<primitive name="Subtract Dark Background" CalibrationFile="AUTOMATIC" Save="0" />
</recipe>
"""


def _recipe(**changes) -> Recipe:
    fields = dict(name="Test", reduction_type="SpectralScience", short_name="test",
                  input_dir="/data/raw/131118", output_dir="/data/reduced/131118",
                  files=("S20131118S0064.fits", "S20131118S0065.fits"),
                  primitives=(Primitive(name="Load Wavelength Calibration",
                                        params={"CalibrationFile": "AUTOMATIC"}),
                              Primitive(name="Assemble Spectral Datacube")))
    return Recipe(**{**fields, **changes})


# --- templates -----------------------------------------------------------------------------


def test_templates_are_the_shipped_files():
    shipped = sorted(p.name for p in resources.files("cruncher.recipes").joinpath("templates").iterdir()
                     if p.name.endswith(".xml"))
    assert shipped == sorted(f"{name}.xml" for name in TEMPLATES)
    assert set(TEMPLATES) == set(EXPECTED_TEMPLATES)


@pytest.mark.parametrize("stem", sorted(EXPECTED_TEMPLATES))
def test_template_contents(stem):
    name, reduction_type, short_name, steps = EXPECTED_TEMPLATES[stem]
    recipe = load_template(stem)
    assert (recipe.name, recipe.reduction_type, recipe.short_name) == (name, reduction_type,
                                                                       short_name)
    assert recipe.files == () and recipe.input_dir == "" and recipe.output_dir == ""
    assert [(p.name, dict(p.params)) for p in recipe.primitives] == steps
    assert load_template(short_name) == recipe


@pytest.mark.parametrize("stem", sorted(EXPECTED_TEMPLATES))
def test_template_round_trip_is_exact(stem):
    recipe = load_template(stem)
    text = recipe.to_xml()
    assert Recipe.from_xml(text, require_inputs=False) == recipe
    assert text == resources.files("cruncher.recipes").joinpath("templates", f"{stem}.xml").read_text()


def test_a_template_has_no_inputs_so_it_is_refused_as_a_runnable_recipe():
    with pytest.raises(RecipeError, match="no <fits> files"):
        Recipe.from_xml(load_template("dark").to_xml())


def test_unknown_template():
    with pytest.raises(RecipeError, match="unknown recipe template 'nope'.*quickcube"):
        load_template("nope")


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_with_files():
    recipe = _recipe()
    text = recipe.to_xml()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<recipe Name="Test" '
                           'ReductionType="SpectralScience" ShortName="test">\n')
    assert '   <fits FileName="S20131118S0065.fits" />\n' in text
    assert Recipe.from_xml(text) == recipe
    assert Recipe.from_xml(text.encode()) == recipe


def test_the_reference_example_parses_and_writes_back_identically():
    recipe = Recipe.from_xml(EXAMPLE)
    assert recipe.input_paths == (Path("/data/raw/131118/S20131118S0064.fits"),)
    assert recipe.primitive("Subtract Dark Background").params == {"CalibrationFile": "AUTOMATIC",
                                                                     "Save": "0"}
    assert recipe.to_xml() == EXAMPLE


def test_awkward_characters_round_trip():
    recipe = _recipe(name='a "quoted" <name> & \'more\'', short_name="x\ty",
                     files=("we ird&.fits", "ünï\ncode.fits"),
                     primitives=(Primitive(name="P > Q", params={"k": ' a\r\nb ', "k2": "&amp;"}),))
    assert Recipe.from_xml(recipe.to_xml()) == recipe


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="$"), max_size=20)


@settings(max_examples=150, deadline=None)
@given(name=_text, short=_text, files=st.lists(_text.filter(str.strip), unique=True, max_size=4),
       params=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True)
                              .filter(lambda k: k != "name"), _text, max_size=4))
def test_round_trip_property(name, short, files, params):
    try:
        recipe = _recipe(name=name, short_name=short, files=tuple(files),
                         primitives=(Primitive(name="Step", params=params),))
    except RecipeError as exc:  # characters XML 1.0 cannot carry are refused up front
        assert "XML cannot carry" in exc.reason
        return
    assert Recipe.from_xml(recipe.to_xml(), require_inputs=False) == recipe


# --- reading -------------------------------------------------------------------------------


def test_old_style_drf_and_module_elements():
    text = """<?xml version="1.0" encoding="UTF-8"?>
<DRF LogPath="/logs" ReductionType="Calibration">
<dataset InputDir="/raw" Name="" OutputDir="/out">
   <fits FileName="S20131118S0001.fits"/>
   <fits FileName="S20131118S0002.fits"/>
</dataset>
<module name="Combine 2D dark images" Method="median" Save="1" gpitv="0"/>
<primitive name="Another"/>
</DRF>"""
    recipe = Recipe.from_xml(text)
    assert recipe.reduction_type == "Calibration" and recipe.name == "" and recipe.short_name == ""
    assert recipe.files == ("S20131118S0001.fits", "S20131118S0002.fits")
    assert recipe.primitive_names == ("Combine 2D dark images", "Another")
    assert recipe.primitive("Combine 2D dark images").params == {"Method": "median", "Save": "1",
                                                                 "gpitv": "0"}
    assert "<recipe " in recipe.to_xml() and "<module" not in recipe.to_xml()


def _with_dirs(input_dir: str, output_dir: str = "/out") -> str:
    return EXAMPLE.replace('"/data/raw/131118"', f'"{input_dir}"').replace(
        '"/data/reduced/131118"', f'"{output_dir}"')


def test_environment_expansion_from_mapping():
    env = {"GPI_RAW_DATA_DIR": "/raw", "NIGHT": "131118", "OUT": "/reduced"}
    recipe = Recipe.from_xml(_with_dirs("${GPI_RAW_DATA_DIR}/$NIGHT", "$OUT/x${NIGHT}y"), env=env)
    assert recipe.input_dir == "/raw/131118" and recipe.output_dir == "/reduced/x131118y"
    assert recipe.input_paths == (Path("/raw/131118/S20131118S0064.fits"),)


def test_environment_expansion_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("GPI_RAW_DATA_DIR", "/from/environ")
    assert Recipe.from_xml(_with_dirs("${GPI_RAW_DATA_DIR}")).input_dir == "/from/environ"


def test_undefined_variable_fails_clearly(monkeypatch):
    monkeypatch.delenv("GPI_NO_SUCH_DIR", raising=False)
    with pytest.raises(RecipeError) as info:
        Recipe.from_xml(_with_dirs("${GPI_NO_SUCH_DIR}/x"))
    assert info.value.reason == ("InputDir '${GPI_NO_SUCH_DIR}/x' uses environment variable "
                                 "GPI_NO_SUCH_DIR, which is not defined")
    assert info.value.path == "<recipe>"
    with pytest.raises(RecipeError, match="OutputDir .* NOPE, which is not defined"):
        Recipe.from_xml(_with_dirs("/raw", "$NOPE"), env={})


def test_a_dollar_that_is_no_variable_is_kept():
    assert Recipe.from_xml(_with_dirs("/raw/a$/b$"), env={}).input_dir == "/raw/a$/b$"


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<recipe Name="&lol3;" ReductionType="Testing" ShortName="x">
<dataset InputDir="/raw" OutputDir="/out"><fits FileName="a.fits"/></dataset></recipe>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<recipe Name="&secret;" ReductionType="Testing" ShortName="x">
<dataset InputDir="/raw" OutputDir="/out"><fits FileName="a.fits"/></dataset></recipe>"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY, BILLION_LAUGHS.encode(),
                                  "<!doctype recipe>\n" + EXAMPLE.split("\n", 1)[1],
                                  EXAMPLE.replace("<recipe", "<!ENTITY x 'y'>\n<recipe")])
def test_dtd_and_entities_are_refused(text):
    with pytest.raises(RecipeError, match="DTDs and entities are not allowed"):
        Recipe.from_xml(text)


@pytest.mark.parametrize("text, reason", [
    (EXAMPLE.replace("</recipe>", ""), "not well-formed XML"),
    ("", "not well-formed XML"),
    (EXAMPLE.replace("recipe", "cookbook"), "root element is <cookbook>, expected <recipe>"),
    (EXAMPLE.replace("dataset", "data"), "no <dataset> element"),
    (EXAMPLE.replace("</dataset>", '</dataset>\n<dataset InputDir="/a" OutputDir="/b"/>'),
     "2 <dataset> elements"),
    (EXAMPLE.replace(' InputDir="/data/raw/131118"', ""), "<dataset> has no InputDir attribute"),
    (EXAMPLE.replace('InputDir=', "inputdir="), "<dataset> has no InputDir attribute"),
    (EXAMPLE.replace(' OutputDir="/data/reduced/131118"', ""), "<dataset> has no OutputDir"),
    (EXAMPLE.replace('<primitive name="Load', '<primitive nom="Load'),
     "a <primitive> element has no name attribute"),
    (EXAMPLE.replace('name="Load Wavelength Calibration"', 'name=" "'),
     "a <primitive> element has an empty name"),
    (EXAMPLE.replace('FileName=', "File="), "<fits> has no FileName attribute"),
    (EXAMPLE.replace('   <fits FileName="S20131118S0064.fits" />\n', ""),
     "no <fits> files, and a SpectralScience reduction needs inputs"),
    (EXAMPLE.replace('CalibrationFile=', 'x:y="1" CalibrationFile=').replace(
        "<recipe ", '<recipe xmlns:x="urn:x" '), "is not a valid parameter name"),
    (EXAMPLE.replace("S20131118S0064.fits", "&#1;.fits"), "not well-formed XML"),
    (EXAMPLE.replace('</dataset>', '   <fits FileName="S20131118S0064.fits" />\n</dataset>'),
     "an input file is listed twice"),
    (b"\xff\x00garbage", "not UTF-8 text"),
])
def test_bad_recipes_raise_recipe_error_with_a_reason(text, reason):
    with pytest.raises(RecipeError) as info:
        Recipe.from_xml(text)
    assert reason in info.value.reason
    assert info.value.path == "<recipe>"
    assert isinstance(info.value, BadInputError) and not info.value.retryable


def test_testing_recipes_need_no_inputs():
    text = EXAMPLE.replace("SpectralScience", "Testing").replace(
        '   <fits FileName="S20131118S0064.fits" />\n', "")
    assert Recipe.from_xml(text).files == ()


def test_from_file_names_the_file_in_errors(tmp_path):
    good = tmp_path / "good.waiting.xml"
    good.write_text(EXAMPLE)
    assert Recipe.from_file(good) == Recipe.from_xml(EXAMPLE)
    bad = tmp_path / "bad.xml"
    bad.write_text("<recipe>")
    with pytest.raises(RecipeError) as info:
        Recipe.from_file(bad)
    assert info.value.path == str(bad) and str(info.value).startswith(f"{bad}: not well-formed XML")
    with pytest.raises(RecipeError, match="cannot read the recipe") as info:
        Recipe.from_file(tmp_path / "missing.xml")
    assert info.value.path == str(tmp_path / "missing.xml")


def test_encodings():
    assert Recipe.from_xml(b"\xef\xbb\xbf" + EXAMPLE.encode()) == Recipe.from_xml(EXAMPLE)
    utf16 = EXAMPLE.replace("UTF-8", "UTF-16").replace("Quicklook", "Quicklöök")
    assert Recipe.from_xml(utf16.encode("utf-16")).name.startswith("Quicklöök")


# --- the model -----------------------------------------------------------------------------


def test_lookups():
    recipe = _recipe()
    assert recipe.input_paths == (Path("/data/raw/131118/S20131118S0064.fits"),
                                  Path("/data/raw/131118/S20131118S0065.fits"))
    assert recipe.primitive("Load Wavelength Calibration").get("CalibrationFile") == "AUTOMATIC"
    assert recipe.primitive("Assemble Spectral Datacube").get("Save", "0") == "0"
    with pytest.raises(KeyError, match="no primitive 'Correct Distortion'"):
        recipe.primitive("Correct Distortion")


@pytest.mark.parametrize("changes, reason", [
    (dict(input_dir="${GPI_RAW_DATA_DIR}"), "unexpanded environment variable ${GPI_RAW_DATA_DIR}"),
    (dict(output_dir="/a/$HOME"), "unexpanded environment variable $HOME"),
    (dict(name="bell\x07"), "XML cannot carry"),
    (dict(input_dir=""), "the dataset lists files but InputDir is empty"),
    (dict(files="a.fits"), "files must be a sequence"),
    (dict(files=("a.fits", " ")), "an input FileName is empty"),
    (dict(primitives=("Load",)), "expected Primitive objects"),
    (dict(short_name=None), "short_name must be a string"),
])
def test_invalid_recipes_are_refused(changes, reason):
    with pytest.raises(RecipeError) as info:
        _recipe(**changes)
    assert reason in info.value.reason


@pytest.mark.parametrize("params, reason", [
    ({"name": "x"}, "'name' is not a valid parameter name"),
    ({"1x": "x"}, "'1x' is not a valid parameter name"),
    ({"a b": "x"}, "not a valid parameter name"),
    ({"Save": None}, "must be a string, got NoneType"),
    ({"Save": True}, "must be a string, got bool"),
])
def test_invalid_primitive_parameters(params, reason):
    with pytest.raises(RecipeError) as info:
        Primitive(name="Step", params=params)
    assert reason in info.value.reason


def test_numbers_become_strings_and_parameters_are_copied():
    given = {"Save": 1, "scale": 0.5}
    step = Primitive(name="Step", params=given)
    given["Save"] = 0
    assert step.params == {"Save": "1", "scale": "0.5"}
    with pytest.raises(RecipeError, match="empty name"):
        Primitive(name="  ")


# --- inputs must stay inside InputDir -------------------------------------------------------


@pytest.fixture
def raw_dir(tmp_path) -> Path:
    raw = tmp_path / "raw" / "131118"
    raw.mkdir(parents=True)
    (raw / "S20131118S0064.fits").write_bytes(b"x")
    (raw / "sub").mkdir()
    (raw / "sub" / "S20131118S0065.fits").write_bytes(b"x")
    (tmp_path / "secret.fits").write_bytes(b"x")
    return raw


def test_inputs_inside_input_dir_pass(raw_dir):
    (raw_dir / "alias.fits").symlink_to(raw_dir / "S20131118S0064.fits")
    recipe = _recipe(input_dir=str(raw_dir), files=("S20131118S0064.fits",
                                                    "sub/S20131118S0065.fits", "alias.fits"))
    resolved = recipe.check_inputs_within()
    assert resolved == (raw_dir / "S20131118S0064.fits", raw_dir / "sub" / "S20131118S0065.fits",
                        raw_dir / "S20131118S0064.fits")
    assert recipe.check_inputs_within(raw_dir.parent) == resolved


@pytest.mark.parametrize("how", ["dotdot", "symlink", "absolute", "symlinked-dir"])
def test_inputs_outside_input_dir_are_refused(raw_dir, tmp_path, how):
    secret = tmp_path / "secret.fits"
    if how == "dotdot":
        name = "../../secret.fits"
    elif how == "absolute":
        name = str(secret)
    elif how == "symlink":
        (raw_dir / "innocent.fits").symlink_to(secret)
        name = "innocent.fits"
    else:
        (raw_dir / "link").symlink_to(tmp_path)
        name = "link/secret.fits"
    recipe = _recipe(input_dir=str(raw_dir), files=("S20131118S0064.fits", name))
    with pytest.raises(RecipeError) as info:
        recipe.check_inputs_within()
    assert info.value.reason == f"input file {name!r} resolves to {secret}, outside {raw_dir}"


def test_a_symlinked_input_dir_is_fine(raw_dir, tmp_path):
    (tmp_path / "night").symlink_to(raw_dir)
    recipe = _recipe(input_dir=str(tmp_path / "night"), files=("S20131118S0064.fits",))
    assert recipe.check_inputs_within() == (raw_dir / "S20131118S0064.fits",)


# --- make_recipe and recipe_name ------------------------------------------------------------


def test_make_recipe_fills_the_dataset(raw_dir, tmp_path):
    files = [raw_dir / "S20131118S0064.fits", str(raw_dir / "S20131118S0066.fits")]
    recipe = make_recipe("quickcube", files, tmp_path / "reduced")
    assert recipe.input_dir == str(raw_dir) and recipe.output_dir == str(tmp_path / "reduced")
    assert recipe.files == ("S20131118S0064.fits", "S20131118S0066.fits")
    assert recipe.primitives == load_template("quickcube").primitives
    assert Recipe.from_xml(recipe.to_xml()) == recipe
    assert recipe.check_inputs_within()


def test_make_recipe_relative_paths_are_made_absolute(raw_dir, tmp_path):
    os.chdir(raw_dir.parent)
    recipe = make_recipe("dark", ["131118/S20131118S0064.fits"], "out")
    assert recipe.input_dir == str(raw_dir) and recipe.output_dir == str(raw_dir.parent / "out")


def test_make_recipe_refuses_files_from_two_directories(raw_dir, tmp_path):
    with pytest.raises(RecipeError, match="the input files are in 2 directories"):
        make_recipe("quickcube", [raw_dir / "S20131118S0064.fits",
                                  raw_dir / "sub" / "S20131118S0065.fits"], tmp_path)


def test_make_recipe_with_an_input_dir(raw_dir, tmp_path):
    recipe = make_recipe("spdc", ["S20131118S0064.fits", raw_dir / "sub" / "S20131118S0065.fits"],
                         tmp_path, input_dir=raw_dir)
    assert recipe.files == ("S20131118S0064.fits", "sub/S20131118S0065.fits")
    with pytest.raises(RecipeError, match="is not inside InputDir"):
        make_recipe("spdc", [tmp_path / "secret.fits"], tmp_path, input_dir=raw_dir)
    with pytest.raises(RecipeError, match="is not inside InputDir"):
        make_recipe("spdc", ["../../secret.fits"], tmp_path, input_dir=raw_dir)


def test_make_recipe_needs_files(tmp_path):
    for files in ([], "/raw/a.fits"):
        with pytest.raises(RecipeError, match="at least one input file"):
            make_recipe("dark", files, tmp_path)


def test_overrides_apply(tmp_path):
    recipe = make_recipe("spectral_science", ["/raw/S1.fits"], tmp_path, overrides={
        "Interpolate Wavelength Axis": {"Spectralchannels": "45"},
        "Subtract Dark Background": {"CalibrationFile": "/cal/dark.fits", "Save": None},
        "Assemble Spectral Datacube": {"Save": "1"},
    })
    assert recipe.primitive("Interpolate Wavelength Axis").params == {"Spectralchannels": "45"}
    assert recipe.primitive("Subtract Dark Background").params == {"CalibrationFile": "/cal/dark.fits"}
    assert recipe.primitive("Assemble Spectral Datacube").params == {"Save": "1"}
    assert recipe.primitive("Correct Distortion").params == {"Save": "1"}
    assert load_template("spdc").primitive("Interpolate Wavelength Axis").params == {
        "Spectralchannels": "37"}
    assert recipe.primitive_names == load_template("spdc").primitive_names


def test_override_of_a_missing_primitive_fails(tmp_path):
    with pytest.raises(RecipeError, match="cannot override 'Measure Contrast': recipe 'quickcube'"):
        make_recipe("quickcube", ["/raw/S1.fits"], tmp_path, overrides={"Measure Contrast": {}})


def test_make_recipe_from_a_recipe(tmp_path):
    base = make_recipe("dark", ["/raw/a/S1.fits"], tmp_path)
    again = make_recipe(base, ["/raw/b/S2.fits"], tmp_path / "x")
    assert (again.input_dir, again.files, again.primitives) == ("/raw/b", ("S2.fits",),
                                                                 base.primitives)


def test_recipe_name(tmp_path):
    recipe = make_recipe("quickcube", ["/raw/S20131118S0064.fits", "/raw/S20131118S0065.fits"],
                         tmp_path)
    assert recipe_name(recipe) == "quickcube_S20131118S0064"
    assert recipe_name(recipe, prefix="001_") == "001_quickcube_S20131118S0064"
    gz = make_recipe("dark", ["/raw/S20131118S0001.fits.gz"], tmp_path)
    assert recipe_name(gz) == "dark_S20131118S0001"
    odd = make_recipe("dark", ["/raw/my frame (1).fits"], tmp_path)
    assert recipe_name(odd, prefix=".") == "dark_my_frame_1"
    assert recipe_name(load_template("spdc")) == "spdc"
    for name in (recipe_name(recipe), recipe_name(gz), recipe_name(odd)):
        assert queue.check_name(name) == name
    names = [recipe_name(make_recipe("quickcube", [f"/raw/S20131118S{n:04d}.fits"], tmp_path))
             for n in (100, 9, 64)]
    assert sorted(names) == ["quickcube_S20131118S0009", "quickcube_S20131118S0064",
                             "quickcube_S20131118S0100"]
