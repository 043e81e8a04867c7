"""Job planning: what a dataset gets, and the order several datasets' jobs run in."""
from __future__ import annotations

from cruncher.backend.planning import plan_jobs
from cruncher.backend.psf_queue import PsfQueue
from cruncher.messages import Instruction


def _dataset(name: str) -> tuple[Instruction, list[str]]:
    cubes = [f"/data/reduced/{name}/S20160315S{n:04d}_spdc.fits" for n in range(10, 20)]
    return Instruction(files=tuple(cubes), outdir=f"/data/reduced/{name}", level="cube",
                       psfsub=("cadi", "klip", "contrast")), cubes


def _names(jobs) -> list[str]:
    return [j.params["name"] for j in jobs]


def test_a_dataset_gets_two_cadi_three_klip_four_fakes_and_a_contrast_job():
    jobs = plan_jobs(*_dataset("HD_95086"))
    assert sorted(_names(jobs)) == sorted([
        "cadi", "cadi_sdi", "klip_general", "klip_tdwarf", "klip_disk",
        "fakes_L_0", "fakes_L_45", "fakes_T_0", "fakes_T_45", "contrast"])
    by_name = {j.params["name"]: j for j in jobs}
    needed = {by_name[n].id for n in ("fakes_L_0", "fakes_L_45", "fakes_T_0", "fakes_T_45",
                                      "klip_general", "klip_tdwarf")}
    assert set(by_name["contrast"].depends_on) == needed
    # the same instruction plans the same jobs (the journal then knows them)
    assert [j.id for j in plan_jobs(*_dataset("HD_95086"))] == [j.id for j in jobs]
    assert plan_jobs(_dataset("HD_95086")[0], ["/one_spdc.fits"]) == []


def test_every_datasets_general_klip_runs_before_anyones_fakes():
    queue = PsfQueue()
    for name in ("HD_95086", "beta_Pic", "HR_4796A"):
        for job in plan_jobs(*_dataset(name)):
            assert queue.put(job)
    order = []
    while (job := queue.get(["klip"], timeout=0)) is not None:
        order.append((job.dataset.rsplit("/", 1)[1], job.params["name"]))
        queue.mark_done(job.id)      # the worker ran it; its dependents may now run
    names = [n for _, n in order]
    assert names[:3] == ["klip_general"] * 3
    last_reduction = max(i for i, n in enumerate(names) if n in ("klip_tdwarf", "klip_disk"))
    first_fakes = min(i for i, n in enumerate(names) if n.startswith("fakes_"))
    assert last_reduction < first_fakes
    for dataset in ("HD_95086", "beta_Pic", "HR_4796A"):
        mine = [n for d, n in order if d == dataset]
        assert len(mine) == 8 and mine.index("contrast") == 7   # after its own injections


def test_the_klip_engine_setting_reaches_klip_jobs_and_an_instruction_may_override_it():
    from dataclasses import replace

    instruction, cubes = _dataset("engine")
    jobs = plan_jobs(instruction, cubes, klip_engine="pyklip")
    klip_family = [j for j in jobs if j.family == "klip" and j.params["name"] != "contrast"]
    assert klip_family and all(j.params["engine"] == "pyklip" for j in klip_family)
    assert all("engine" not in j.params for j in jobs if j.family == "cadi")
    chosen = plan_jobs(replace(instruction, params={"engine": "fast"}), cubes, klip_engine="pyklip")
    assert {j.params.get("engine") for j in chosen if j.family == "klip"} == {"fast"}
    # the engine is part of the work: the same data with another engine is another job
    assert {j.id for j in jobs}.isdisjoint({j.id for j in chosen if j.family == "klip"})
