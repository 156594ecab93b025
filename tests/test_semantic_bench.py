"""The semantic benchmark measures what it says: its cases' ground truth, the judge's bookkeeping, the
pixel metrics, the baseline row, and a tiny run through the real engine on the CPU.

A benchmark whose yardstick is wrong ranks methods wrongly without anyone noticing, so every measure
is checked on pictures whose answer is known: the ground-truth target is an edit that worked, the
unchanged source is one that did nothing, identical pixels have unbounded PSNR.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from bench import semantic
from bench.semantic_metrics import PSNR_CAP, changed_keys, dilate, outside, psnr, ssim, ssim_map, verdict
from pipeline.events import CancelToken
from pipeline.inversion.ddim import ddim_invert
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.params import params_from_dict
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, Sampling, denoise

import world  # noqa: E402  (resources/demo_world/world.py: bench.semantic puts its folder on sys.path)

cases, judge = semantic.world_cases, semantic.world_judge


# -- the cases ---------------------------------------------------------------------------------------


def test_reference_pair_puts_the_reference_subject_in_the_source_layout():
    rng = np.random.default_rng(7)
    for _ in range(8):
        pair = world.reference_pair(rng)
        src, tgt, ref = pair.source.description, pair.target.description, pair.reference.description
        a, b, shown = src.subjects[pair.subject], tgt.subjects[pair.subject], ref.subjects[pair.reference_subject]
        assert src.background == tgt.background and len(ref.subjects) == 1 and ref.background.ground != "sea"
        assert (b.kind, b.color, b.texture) == (shown.kind, shown.color, shown.texture)
        assert b.kind != a.kind and b.color != a.color and b.texture in ("striped", "dotted")
        assert (b.size, b.position, b.facing, b.seed) == (a.size, a.position, a.facing, a.seed)
        assert all(x == y for k, (x, y) in enumerate(zip(src.subjects, tgt.subjects)) if k != pair.subject)
        assert np.array_equal(pair.source.image[~pair.mask], pair.target.image[~pair.mask])
        assert pair.reference.masks[0].sum() >= 20
        assert b.kind in pair.target.caption.split() and shown.color in pair.reference.caption.split()


def test_cases_cover_every_task_are_seeded_and_a_short_run_is_a_prefix():
    assert set(cases.TASKS) == {*world.EDIT_KINDS, world.REFERENCE}
    short, long = cases.make_cases(2), cases.make_cases(3)
    assert [c.id for c in short] == [c.id for c in long if int(c.id[-3:]) < 2]
    for a in short:
        b = next(c for c in long if c.id == a.id)
        assert a.source.caption == b.source.caption and np.array_equal(a.target.image, b.target.image)
    assert {c.task for c in long} == set(cases.TASKS) and len({c.id for c in long}) == len(long)
    for case in long:
        assert (case.reference is not None) == (case.task == world.REFERENCE)
        assert case.source.caption != case.target.caption and case.mask.any()
    with pytest.raises(ValueError):
        cases.make_cases(1, ("rotate",))


# -- the judge's bookkeeping -------------------------------------------------------------------------


def one_hot_logits(facts: judge.Facts) -> torch.Tensor:
    """The logits of a judge that is sure of `facts`."""
    y = judge.labels(facts)
    logits = torch.full((1, judge.N_LOGITS), -5.0)
    positions = judge.split_logits(torch.arange(judge.N_LOGITS, dtype=torch.float32)[None])
    for part, column in positions:
        first = int(part.reshape(-1)[0])
        if part.dim() == 1:
            logits[0, first] = 5.0 if y[column] == 1 else -5.0
        elif y[column] != judge.IGNORE:
            logits[0, first + y[column]] = 5.0
    return logits


def test_labels_decode_back_to_the_facts_and_mirror_with_the_picture():
    rng = np.random.default_rng(2)
    swap = {"left": "right", "right": "left"}
    for _ in range(300):
        d = world.sample_description(rng)
        f = judge.facts(d)
        assert judge.decode(one_hot_logits(f))[0] == f
        mirrored = world.Description(d.background, tuple(replace(s, position=swap.get(s.position, s.position))
                                                         for s in d.subjects))
        flipped = judge.flip_labels(torch.from_numpy(judge.labels(f))[None])[0]
        assert torch.equal(flipped, torch.from_numpy(judge.labels(judge.facts(mirrored))))


def test_the_loss_is_each_heads_mean_loss_summed():
    """The batched loss equals a plain loop over every head (attributes only where the slot is occupied)."""
    rng = np.random.default_rng(6)
    y = torch.from_numpy(np.stack([judge.labels(judge.facts(world.sample_description(rng))) for _ in range(40)]))
    logits = torch.randn(len(y), judge.N_LOGITS, generator=torch.Generator().manual_seed(0))
    expected = 0.0
    for part, column in judge.split_logits(logits):
        target = y[:, column]
        if part.dim() == 1:
            expected += torch.nn.functional.binary_cross_entropy_with_logits(part, target.float())
        elif (target != judge.IGNORE).any():
            expected += torch.nn.functional.cross_entropy(part, target, ignore_index=judge.IGNORE)
    assert judge.loss(logits, y) == pytest.approx(float(expected), rel=1e-5)


def test_accuracy_counts_each_attribute_where_it_is_defined():
    rng = np.random.default_rng(3)
    truths = [judge.facts(world.sample_description(rng)) for _ in range(50)]
    assert all(v == 1.0 for v in judge.accuracy(truths, truths).values())
    wrong = []
    for f in truths:
        f = dict(f)
        slot = next(s for s in judge.SLOTS if f[s] == "yes")
        f[f"{slot}.color"] = "green" if f[f"{slot}.color"] != "green" else "red"
        wrong.append(f)
    acc = judge.accuracy(wrong, truths)
    subjects = sum(f[s] == "yes" for f in truths for s in judge.SLOTS)
    assert acc["color"] == pytest.approx(1 - 50 / subjects) and acc["kind"] == 1.0 and acc["ground"] == 1.0
    empty = [{**f, **{s: "no" for s in judge.SLOTS}} for f in truths]  # nothing seen: every subject wrong
    assert judge.accuracy(empty, truths)["kind"] == 0.0 and judge.accuracy(empty, truths)["position"] == 0.0


# -- the measures -------------------------------------------------------------------------------------


def test_verdict_of_the_ground_truth_and_of_doing_nothing():
    for case in cases.make_cases(2):
        source, target = judge.facts(case.source.description), judge.facts(case.target.description)
        changed = changed_keys(source, target)
        assert changed
        done = verdict(target, source, target)
        assert done.success and done.kept and done.misses == ()
        nothing = verdict(source, source, target)
        assert not nothing.success and nothing.kept and nothing.success_share == 0.0
        if case.task == "color":
            assert changed == (f"{judge.slot_of(case.target.description.subjects[case.pair.subject])}.color",)
        broken = dict(target, ground="sea" if target["ground"] != "sea" else "snow")
        assert verdict(broken, source, target).success and not verdict(broken, source, target).kept


def test_pixel_metrics_outside_the_region():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), bool)
    region[10:14, 10:14] = True
    keep = outside(region, 5)  # SSIM's windows (radius 5) around the kept pixels then miss the region
    assert keep.sum() == 32 * 32 - 14 * 14 and not keep[5:19, 5:19].any()
    inside = a.copy()
    inside[region] = 255 - inside[region]
    assert psnr(inside, a, keep) == PSNR_CAP and psnr(a, a) == PSNR_CAP
    assert ssim(inside, a, keep) == pytest.approx(1.0)
    assert ssim(a, a) == pytest.approx(1.0)
    off = a.copy()
    off[0, 0] = 255 - off[0, 0]
    assert psnr(off, a, keep) < PSNR_CAP and psnr(off, a) < PSNR_CAP
    noise = rng.integers(-40, 41, a.shape)
    noisy, slightly = (np.clip(a.astype(int) + k, 0, 255).astype(np.uint8) for k in (noise, noise // 4))
    assert psnr(noisy, a, keep) < psnr(slightly, a, keep) < PSNR_CAP
    assert 0 < ssim(noisy, a, keep) < ssim(slightly, a, keep) < 1
    assert np.array_equal(dilate(region, 0), region)


def test_ssim_matches_a_direct_computation_of_its_formula():
    """Every window statistic of Wang et al. (2004) computed pixel by pixel, against the convolutions."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (14, 15, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    r = np.arange(-5, 6)
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    fast = ssim_map(a, b)
    assert fast.shape == (4, 5)
    for y in range(4):
        for x in range(5):
            values = []
            for ch in range(3):
                p = a[y : y + 11, x : x + 11, ch].astype(float)
                q = b[y : y + 11, x : x + 11, ch].astype(float)
                mp, mq = (w * p).sum(), (w * q).sum()
                vp, vq, cov = (w * (p - mp) ** 2).sum(), (w * (q - mq) ** 2).sum(), (w * (p - mp) * (q - mq)).sum()
                values.append((2 * mp * mq + c1) * (2 * cov + c2) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
            assert fast[y, x] == pytest.approx(np.mean(values), abs=1e-9)


# -- the rows -----------------------------------------------------------------------------------------


def test_the_baseline_is_ddim_inversion_and_the_target_prompt_without_control(demo_bundle, demo_latent):
    """The baseline row (p2p with its controls off) samples the target exactly as plain DDIM would."""
    source, target, steps = "a house in a meadow under a blue sky", "a castle in a meadow under a blue sky", 6
    ctx = RunContext(demo_bundle, CancelToken(), lambda event: None)
    params = params_from_dict(P2PParams, {**semantic.BASELINE_PARAMS, "steps": steps})
    method = PromptToPrompt()
    inversion = method.invert(ctx, demo_latent, Prompts(source, target), params, Inputs())
    edited = method.edit(ctx, inversion, Prompts(source, target), params, Inputs()).target
    schedule = DDIMSchedule(demo_bundle.scheduler, steps)
    z_T = ddim_invert(ctx, schedule, demo_latent, ctx.encode_text([source]))[-1:]
    uncond = ctx.encode_text([""])[None].expand(steps, -1, -1, -1)
    plain = denoise(ctx, schedule, z_T, Sampling(ctx.encode_text([target]), uncond, params.guidance), stage="test")
    assert torch.allclose(edited, plain, atol=1e-4, rtol=1e-4), (edited - plain).abs().max()
    replaced = params_from_dict(P2PParams, {**semantic.BASELINE_PARAMS, "steps": steps, "cross_replace": [0, 0.5]})
    controlled = method.edit(ctx, inversion, Prompts(source, target), replaced, Inputs()).target
    assert (controlled - plain).abs().max() > 1e-2  # the comparison can tell a controlled edit apart


def test_bad_overrides_are_refused_before_any_run():
    with pytest.raises(SystemExit, match="steps must lie between"):
        semantic.rows_for(["baseline"], {"steps": "4"})
    with pytest.raises(SystemExit, match="no row's method has the parameter"):
        semantic.rows_for(["masactrl"], {"blend_words": "cat"})
    assert semantic.rows_for(["baseline"], {"steps": "7"})[0].params == {**semantic.BASELINE_PARAMS, "steps": "7"}


def test_inputs_a_method_gets_from_a_case():
    color, reference = cases.make_cases(1, ("color",))[0], cases.make_cases(1, (world.REFERENCE,))[0]
    given, why = semantic.case_inputs(color, "specref", "required")
    assert given == {} and "reference" in why
    given, why = semantic.case_inputs(reference, "specref", "required")
    assert why is None and set(given) == {"reference", "reference_mask"}
    assert np.array_equal(given["reference_mask"], reference.reference_mask)
    given, _ = semantic.case_inputs(color, "p2p", "required")
    assert given == {}
    given, _ = semantic.case_inputs(color, "p2p", "all")
    assert np.array_equal(given["edit_mask"], color.mask)


# -- a tiny run through the engine -------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_benchmark_run_on_the_cpu(tmp_path, capsys):
    argv = ["--methods", "baseline,masactrl", "--tasks", "color,pose", "--per-task", "1", "--param", "steps=6",
            "--device", "cpu", "--out", str(tmp_path / "out"), "--images", str(tmp_path / "images")]
    assert semantic.main(argv) == 0
    out = tmp_path / "out"
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".md"]
    report = json.loads(next(out.glob("*.json")).read_text())
    runs = {(r["row"], r["case"]): r for r in report["runs"]}
    assert set(runs) == {(row, case) for row in ("baseline", "masactrl", "ground truth", "unchanged")
                         for case in ("color-000", "pose-000")}
    reader = judge.Judge.load()
    by_id = {c.id: c for c in cases.make_cases(1, ("color", "pose"))}
    for case in ("color-000", "pose-000"):
        truth, nothing = runs[("ground truth", case)], runs[("unchanged", case)]
        assert truth["psnr_outside"] == PSNR_CAP and nothing["psnr_outside"] == PSNR_CAP
        assert not nothing["success"]  # the source is not the edit
        for row in ("baseline", "masactrl"):
            run = runs[(row, case)]
            assert "error" not in run, run
            assert run["psnr_outside"] < PSNR_CAP and 0 < run["ssim_outside"] < 1
            assert run["seconds"]["total"] >= run["seconds"]["invert"] > 0
            assert 10 < run["reconstruction_psnr"] < PSNR_CAP
            # the record scores the result picture itself (saved losslessly with --images)
            picture = np.asarray(Image.open(tmp_path / "images" / case / f"{row}.png"))
            again = semantic.score(picture, by_id[case], reader.read(picture[None])[0], semantic.DILATE)
            assert {k: run[k] for k in again} == again
    # direct inversion (masactrl's default) puts the source branch back on the inversion: only the VAE is lost
    vae = {c["case"]: c["vae_psnr"] for c in report["cases"]}
    assert runs[("masactrl", "color-000")]["reconstruction_psnr"] == pytest.approx(vae["color-000"], abs=0.05)
    assert runs[("baseline", "color-000")]["reconstruction_psnr"] < vae["color-000"] - 0.5
    markdown = next(out.glob("*.md")).read_text()
    assert "| color | 1 | " in markdown and "masactrl" in markdown
    # a second call adds the missing rows only
    capsys.readouterr()
    assert semantic.main(argv) == 0
    assert "0 runs to do, 4 done before" in capsys.readouterr().out


def test_a_call_stopped_from_outside_loses_no_finished_run(tmp_path, capsys):
    """Runs are journalled as they finish; the next call takes them in (a cut-off last line is left out)."""
    argv = ["--methods", "masactrl", "--tasks", "color", "--per-task", "1", "--device", "cpu", "--out", str(tmp_path),
            "--time-limit", "0"]
    assert semantic.main(argv) == 0
    assert "1 runs left for the next call" in capsys.readouterr().out
    results = next(tmp_path.glob("*.json"))
    journal = semantic.journal_path(results, json.loads(results.read_text())["settings"])
    finished = {"row": "masactrl", "case": "color-000", "task": "color", "error": "stand-in for a finished run"}
    journal.write_text(json.dumps(finished) + "\n" + '{"row": "masactrl", "ca')
    assert semantic.main(argv) == 0
    assert "0 runs to do, 1 done before (1 records taken from" in capsys.readouterr().out
    runs = json.loads(results.read_text())["runs"]
    assert finished in runs and not journal.exists()
