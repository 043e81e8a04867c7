"""The recipe model: read and write GPI DRP recipe XML (reference ``gpi-drp.md``, section 2).

A recipe names a dataset (an input directory, an output directory, the input file names) and an
ordered list of primitives with string parameters::

    <?xml version="1.0" encoding="UTF-8"?>
    <recipe Name="..." ReductionType="SpectralScience" ShortName="quickcube">
    <dataset InputDir="/data/raw/131118" OutputDir="/data/reduced/131118">
       <fits FileName="S20131118S0064.fits" />
    </dataset>
    <primitive name="Load Wavelength Calibration" CalibrationFile="AUTOMATIC" />
    </recipe>

Old files (root ``DRF``, primitives as ``module``) are read too; :meth:`Recipe.to_xml` always
writes the current form, and ``Recipe.from_xml(r.to_xml()) == r`` holds exactly.

Recipes come from other people's hands (operators, the IDL DRP's own parser), so parsing is
defensive: a document with a DTD or entity declarations is refused outright (no entity expansion),
and every problem raises :class:`RecipeError` with one reason written for a person.
"""
from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cruncher.errors import BadInputError

_log = logging.getLogger(__name__)

#: Reduction types of the GPI DRP.
REDUCTION_TYPES = ("SpectralScience", "PolarimetricScience", "Calibration", "Testing")
#: Reduction types whose recipes may be parsed without input files (they make no sense without
#: them anywhere else; templates are read with ``require_inputs=False``).
NO_INPUT_TYPES = frozenset({"Testing"})
#: Largest recipe accepted, in bytes of text; real recipes are a few kB.
MAX_RECIPE_SIZE = 4 * 1024 * 1024

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FORBIDDEN_MARKUP = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_ROOTS = ("recipe", "DRF")
_PRIMITIVE_TAGS = ("primitive", "module")


class RecipeError(BadInputError):
    """A recipe cannot be used; ``path`` is its file, or ``"<recipe>"`` for text.

    Parameters
    ----------
    reason
        What is wrong with it, written for a person.
    path
        The recipe file, when there is one.
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] = "<recipe>") -> None:
        super().__init__(str(path), reason)


@dataclass(frozen=True, kw_only=True)
class Primitive:
    """One step of a recipe: a DRP primitive name and its string parameters, in order."""

    name: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_text("primitive name", self.name)
        if not self.name.strip():
            raise RecipeError("a primitive has an empty name")
        object.__setattr__(self, "params", _params(self.name, self.params))

    def get(self, key: str, default: str | None = None) -> str | None:
        """A parameter's value, or ``default``."""
        return self.params.get(key, default)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A DRP recipe: what to reduce (the dataset) and how (the primitives, in order).

    ``input_dir`` and ``output_dir`` are held environment-expanded. ``files`` are the ``FileName``
    values as written (normally bare names inside ``input_dir``).
    """

    name: str
    reduction_type: str
    short_name: str
    input_dir: str
    output_dir: str
    files: tuple[str, ...] = ()
    primitives: tuple[Primitive, ...] = ()

    def __post_init__(self) -> None:
        for attr in ("name", "reduction_type", "short_name", "input_dir", "output_dir"):
            _check_text(attr, getattr(self, attr))
        for attr in ("input_dir", "output_dir"):
            unexpanded = _VAR.search(getattr(self, attr))
            if unexpanded:
                raise RecipeError(f"{attr} {getattr(self, attr)!r} holds an unexpanded environment "
                                  f"variable {unexpanded.group(0)}")
        object.__setattr__(self, "files", _files(self.files))
        if self.files and not self.input_dir:
            raise RecipeError("the dataset lists files but InputDir is empty")
        primitives = tuple(self.primitives)
        for step in primitives:
            if not isinstance(step, Primitive):
                raise RecipeError(f"expected Primitive objects, got {type(step).__name__}")
        object.__setattr__(self, "primitives", primitives)

    # --- looking inside ---------------------------------------------------------------------

    @property
    def input_paths(self) -> tuple[Path, ...]:
        """The full input paths, ``InputDir/FileName``, in recipe order."""
        return tuple(Path(self.input_dir, name) for name in self.files)

    @property
    def primitive_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.primitives)

    def primitive(self, name: str) -> Primitive:
        """The first primitive called ``name``; :class:`KeyError` if the recipe has none."""
        for step in self.primitives:
            if step.name == name:
                return step
        raise KeyError(f"recipe {self.short_name or self.name!r} has no primitive {name!r}")

    def check_inputs_within(self, root: str | os.PathLike[str] | None = None) -> tuple[Path, ...]:
        """Refuse input files that resolve outside ``root`` (default: the recipe's InputDir).

        Paths are resolved with ``..`` and symbolic links followed, so neither
        ``FileName="../x.fits"`` nor a link inside InputDir pointing elsewhere gets through.

        Returns
        -------
        The resolved input paths.

        Raises
        ------
        RecipeError
            Naming the first file that lies outside.
        """
        base = os.path.realpath(self.input_dir if root is None else root)
        resolved = []
        for name, path in zip(self.files, self.input_paths):
            real = os.path.realpath(path)
            if os.path.commonpath([base, real]) != base:
                raise RecipeError(f"input file {name!r} resolves to {real}, outside {base}")
            resolved.append(Path(real))
        return tuple(resolved)

    # --- reading and writing ----------------------------------------------------------------

    @classmethod
    def from_xml(cls, text: str | bytes, *, env: Mapping[str, str] | None = None,
                 path: str | os.PathLike[str] = "<recipe>", require_inputs: bool = True) -> Recipe:
        """Parse recipe XML.

        Parameters
        ----------
        text
            The XML, as text or bytes (UTF-8 or UTF-16 with a byte-order mark).
        env
            Variables for ``$VAR`` / ``${VAR}`` in InputDir and OutputDir; default ``os.environ``.
            An undefined variable is an error.
        path
            Where the text came from, for error messages.
        require_inputs
            Refuse a recipe without ``<fits>`` files unless its reduction type is in
            :data:`NO_INPUT_TYPES`. Templates are read with ``False``.
        """
        try:
            root = _parse(_as_text(text))
            return cls._from_element(root, os.environ if env is None else env, require_inputs)
        except RecipeError as exc:
            raise RecipeError(exc.reason, path) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
                  require_inputs: bool = True) -> Recipe:
        """Read and parse a recipe file; an unreadable file is a :class:`RecipeError` too."""
        try:
            with open(path, "rb") as stream:
                data = stream.read(MAX_RECIPE_SIZE + 1)
        except OSError as exc:
            raise RecipeError(f"cannot read the recipe: {exc.strerror or exc}", path) from None
        return cls.from_xml(data, env=env, path=path, require_inputs=require_inputs)

    @classmethod
    def _from_element(cls, root: ET.Element, env: Mapping[str, str],
                      require_inputs: bool) -> Recipe:
        if root.tag not in _ROOTS:
            raise RecipeError(f"root element is <{root.tag}>, expected <recipe> (or the old <DRF>)")
        datasets = root.findall("dataset")
        if len(datasets) != 1:
            raise RecipeError("no <dataset> element" if not datasets
                              else f"{len(datasets)} <dataset> elements, expected one")
        dataset = datasets[0]
        dirs = {attr: _expand(attr, _required(dataset, attr), env)
                for attr in ("InputDir", "OutputDir")}
        files = tuple(_required(fits, "FileName") for fits in dataset.findall("fits"))
        reduction_type = root.get("ReductionType", "")
        if require_inputs and not files and reduction_type not in NO_INPUT_TYPES:
            raise RecipeError(f"the dataset lists no <fits> files, and a {reduction_type or 'recipe'}"
                              f" reduction needs inputs")
        steps = []
        for child in root:
            if child.tag in _PRIMITIVE_TAGS:
                steps.append(_primitive(child))
            elif child.tag != "dataset":
                _log.warning("ignoring unknown element <%s> in a recipe", child.tag)
        return cls(name=root.get("Name", ""), reduction_type=reduction_type,
                   short_name=root.get("ShortName", ""), input_dir=dirs["InputDir"],
                   output_dir=dirs["OutputDir"], files=files, primitives=tuple(steps))

    def to_xml(self) -> str:
        """The recipe as GPI DRP XML (current form: ``<recipe>`` and ``<primitive>``)."""
        lines = ['<?xml version="1.0" encoding="UTF-8"?>',
                 f'<recipe Name={_quote(self.name)} ReductionType={_quote(self.reduction_type)} '
                 f'ShortName={_quote(self.short_name)}>',
                 f'<dataset InputDir={_quote(self.input_dir)} OutputDir={_quote(self.output_dir)}>']
        lines += [f'   <fits FileName={_quote(name)} />' for name in self.files]
        lines.append('</dataset>')
        for step in self.primitives:
            params = "".join(f" {key}={_quote(value)}" for key, value in step.params.items())
            lines.append(f'<primitive name={_quote(step.name)}{params} />')
        lines.append('</recipe>')
        return "\n".join(lines) + "\n"


# --- parsing helpers -------------------------------------------------------------------------


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_RECIPE_SIZE:
            raise RecipeError(f"larger than {MAX_RECIPE_SIZE} bytes")
        encoding = "utf-16" if text[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        try:
            text = bytes(text).decode(encoding)
        except UnicodeDecodeError as exc:
            raise RecipeError(f"not {encoding.removesuffix('-sig').upper()} text: {exc}") from None
    if not isinstance(text, str):
        raise RecipeError(f"expected XML text, got {type(text).__name__}")
    if len(text) > MAX_RECIPE_SIZE:
        raise RecipeError(f"larger than {MAX_RECIPE_SIZE} characters")
    return text.removeprefix("\ufeff")


def _parse(text: str) -> ET.Element:
    forbidden = _FORBIDDEN_MARKUP.search(text)
    if forbidden:
        raise RecipeError(f"refusing a recipe with a <!{forbidden.group(1).upper()}> declaration "
                          f"(DTDs and entities are not allowed)")
    try:
        return ET.fromstring(text, parser=ET.XMLParser())
    except ET.ParseError as exc:
        raise RecipeError(f"not well-formed XML: {exc}") from None


def _required(element: ET.Element, attr: str) -> str:
    value = element.get(attr)
    if value is None:
        raise RecipeError(f"<{element.tag}> has no {attr} attribute")
    return value


def _expand(attr: str, value: str, env: Mapping[str, str]) -> str:
    """Replace ``$VAR`` and ``${VAR}`` from ``env``; an undefined variable is an error."""
    def lookup(match: re.Match[str]) -> str:
        var = match.group(1) or match.group(2)
        if var not in env:
            raise RecipeError(f"{attr} {value!r} uses environment variable {var}, "
                              f"which is not defined")
        return env[var]

    return _VAR.sub(lookup, value)


def _primitive(element: ET.Element) -> Primitive:
    attrs = dict(element.attrib)
    name = attrs.pop("name", None)
    if name is None or not name.strip():
        raise RecipeError(f"a <{element.tag}> element has no name attribute"
                          if name is None else f"a <{element.tag}> element has an empty name")
    return Primitive(name=name, params=attrs)


# --- validation helpers ----------------------------------------------------------------------


def _check_text(what: str, value: Any) -> None:
    if not isinstance(value, str):
        raise RecipeError(f"{what} must be a string, got {type(value).__name__}")
    bad = _NOT_XML.search(value)
    if bad:
        raise RecipeError(f"{what} {value!r} holds character {bad.group(0)!r}, "
                          f"which XML cannot carry")


def _params(primitive: str, params: Any) -> dict[str, str]:
    if not isinstance(params, Mapping):
        raise RecipeError(f"parameters of {primitive!r} must be a mapping, "
                          f"got {type(params).__name__}")
    out = {}
    for key, value in params.items():
        if not isinstance(key, str) or not _ATTR_NAME.match(key) or key == "name":
            raise RecipeError(f"primitive {primitive!r}: {key!r} is not a valid parameter name")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        _check_text(f"parameter {key} of {primitive!r}", value)
        out[key] = value
    return out


def _files(files: Any) -> tuple[str, ...]:
    if isinstance(files, str | bytes) or not hasattr(files, "__iter__"):
        raise RecipeError(f"files must be a sequence of file names, got {type(files).__name__}")
    names = tuple(files)
    for name in names:
        _check_text("FileName", name)
        if not name.strip():
            raise RecipeError("an input FileName is empty")
    if len(set(names)) != len(names):
        raise RecipeError("an input file is listed twice")
    return names


def _quote(value: str) -> str:
    """``value`` as a double-quoted XML attribute that parses back to exactly ``value``."""
    escaped = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
               .replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
               .replace("\t", "&#9;"))
    return f'"{escaped}"'
