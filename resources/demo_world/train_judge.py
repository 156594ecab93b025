"""Train the attribute judge (judge.py) on demo-world renders and, given the model, on its own pictures.

Why: the judge is the benchmark's yardstick, so it must read the demo-world model's soft, slightly
blurred pictures as well as the crisp renders it learns from. Three kinds of training pictures:

1. renders of random scenes (world.render_scene), labelled by their descriptions;
2. with `--model` (the demo-world weights, loaded with pipeline.models.load_model): the same renders
   through the model's VAE (encode, decode), and a share of them re-drawn by the model ("restyled":
   the VAE latent noised to a random strength in [--restyle-min, --restyle-max] of the DDIM run and
   denoised with its own caption at guidance 7.5, as SDEdit does). The result is in the model's
   style but anchored to the render, so the render's labels still hold; this is also what an edit's
   output looks like (a model sample from an inverted render);
3. every picture augmented on the fly: mirrored (the left and right slots swap), blurred, noised,
   scaled down and up, small changes of brightness and colour balance (small enough that no colour
   of the world turns into its neighbour).

Held-out pictures (a separate seed stream) measure the accuracy per attribute (judge.accuracy) of
the saved float16 weights, reloaded: on renders, and with --model also on their VAE round trips, on
restyled renders (strength 0.5), and on the model's own samples drawn from the held-out captions
alone (text to image, 20 DDIM steps, guidance 7.5; there a miss is the model's or the judge's).
Everything runs within --minutes of wall clock: rendering (worker processes, forked before CUDA),
the model's pictures, then training (AdamW, cosine by time) until the budget's end less a reserve
for saving and evaluating. Seeded; as with train.py the number of steps follows the budget.

    python3 resources/demo_world/train_judge.py --device cuda --minutes 5 --model resources/demo_world/weights \\
        --out resources/demo_world/judge                                            # GPU: the committed judge
    .venv/bin/python resources/demo_world/train_judge.py --device cpu --minutes 20 --scenes 6000 --out /tmp/judge
    ... --evaluate --model resources/demo_world/weights --out resources/demo_world/judge   # measure a judge again
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import judge as J  # noqa: E402  (sibling modules)
import world  # noqa: E402
from train import Log, cosine  # noqa: E402

HELD_OUT_CHUNK = 10**6
CHUNK = 250


def render_chunk(job: tuple[int, int, int]) -> tuple[np.ndarray, list[J.Facts], list[str]]:
    """Chunk k of the seed's stream: uint8 pictures, their facts and captions (a pure function of (seed, k))."""
    seed, chunk, n = job
    rng = np.random.default_rng([seed, chunk])
    scenes = [world.render_scene(rng) for _ in range(n)]
    return np.stack([s.image for s in scenes]), [J.facts(s.description) for s in scenes], [s.caption for s in scenes]


def render(seed: int, first_chunk: int, n: int, workers: int, deadline: float,
           log) -> tuple[np.ndarray, list[J.Facts], list[str]]:
    """n scenes from chunk `first_chunk` on, in worker processes; stops early at `deadline`."""
    jobs = [(seed, first_chunk + k, min(CHUNK, n - k * CHUNK)) for k in range(math.ceil(n / CHUNK))]
    images, facts, captions = [], [], []
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        for im, f, cap in (pool.imap(render_chunk, jobs) if pool else map(render_chunk, jobs)):
            images.append(im)
            facts += f
            captions += cap
            if time.time() > deadline:
                log(f"rendering stopped at its deadline after {len(captions)} of {n} scenes")
                break
    finally:
        if pool:
            pool.terminate()
    return np.concatenate(images), facts, captions


# --------------------------------------------------------------------------------------------------
# The model's pictures


@torch.no_grad()
def redraw(bundle, images: np.ndarray, captions: list[str], strength: float, steps: int, seed: int) -> np.ndarray:
    """The model's version of uint8 pictures: strength 0 is the VAE round trip; in (0, 1) the latent is
    noised to that share of a `steps`-step DDIM run and denoised with the caption at guidance 7.5;
    1 draws from the caption alone (pure noise)."""
    from pipeline.events import CancelToken
    from pipeline.run import RunContext, RunOptions
    from pipeline.sampling import DDIMSchedule, Sampling, denoise

    ctx = RunContext(bundle, CancelToken(), lambda event: None, RunOptions(seed=seed))  # one per batch: its text cache
    z0 = ctx.encode_image(J.to_input(images).to(ctx.device))
    if strength > 0:
        schedule = DDIMSchedule(bundle.scheduler, steps)
        run = copy.copy(schedule)
        run.timesteps = schedule.timesteps[steps - max(1, round(strength * steps)):]
        noise = torch.randn(z0.shape, generator=ctx.generator).to(ctx.device)
        a = schedule.alpha(run.timesteps[0])
        z0 = noise if strength >= 1 else a**0.5 * z0 + (1 - a) ** 0.5 * noise
        uncond = ctx.encode_text([""])[None].expand(len(run.timesteps), len(images), -1, -1)
        z0 = denoise(ctx, run, z0, Sampling(ctx.encode_text(list(captions)), uncond, 7.5), stage="judge data")
    pictures = ctx.decode(z0)
    return ((pictures + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def redraw_all(bundle, images, captions, strengths, steps: int, seed: int, batch: int, deadline: float) -> np.ndarray:
    """`redraw` over batches, strength strengths[b] for batch b; stops at `deadline` (fewer pictures)."""
    out = []
    for b, k in enumerate(range(0, len(images), batch)):
        if time.time() > deadline:
            break
        out.append(redraw(bundle, images[k : k + batch], captions[k : k + batch], strengths[b], steps, seed + b))
    return np.concatenate(out) if out else images[:0]


# --------------------------------------------------------------------------------------------------
# Training


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, down-up scaling, noise and small brightness / colour-balance changes on [-1, 1] pictures.

    Each is computed for the whole batch and kept where a picture drew it (torch.where), so nothing
    waits for the device: random numbers come from the CPU generator."""
    b, device = len(x), x.device
    u = lambda *shape: torch.rand(*shape, generator=gen).to(device)  # noqa: E731
    sigma = 0.3 + 0.9 * float(torch.rand(1, generator=gen))
    r = torch.arange(-3, 4, device=device, dtype=x.dtype)
    k = torch.exp(-r**2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, 7).expand(3, 1, 1, 7)
    blurred = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k, groups=3)
    blurred = F.conv2d(F.pad(blurred, (0, 0, 3, 3), mode="replicate"), k.transpose(2, 3), groups=3)
    x = torch.where(u(b, 1, 1, 1) < 0.35, blurred, x)
    small = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
    x = torch.where(u(b, 1, 1, 1) < 0.2, F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False), x)
    gain = (1 + 0.07 * (2 * u(b, 1, 1, 1) - 1)) * (1 + 0.03 * (2 * u(b, 3, 1, 1) - 1))
    x = (x + 1) * gain - 1 + 0.06 * (2 * u(b, 1, 1, 1) - 1)
    x = x + torch.randn(x.shape, generator=gen).to(device) * 0.06 * u(b, 1, 1, 1) * (u(b, 1, 1, 1) < 0.5)
    return x.clamp(-1, 1)


def train(net, pools: list[np.ndarray], y: torch.Tensor, device, batch: int, lr: float, seconds: float,
          gen: torch.Generator, log) -> int:
    """Batches draw a picture index, then one of the versions (render, VAE, restyled) that exist for it.
    Indices are drawn on the CPU; on the device every step is gathers and torch.where, and the loss is
    read back only when it is logged."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    counts = torch.tensor([len(p) for p in pools])
    tensors = [torch.from_numpy(p).to(device) for p in pools]
    y = y.to(device)
    net.train()
    start, step, recent = time.time(), 0, []

    def mean_loss() -> float:
        return float(torch.stack(recent[-50:]).mean()) if recent else float("nan")

    while (elapsed := time.time() - start) < seconds:
        for g in opt.param_groups:
            g["lr"] = cosine(elapsed / seconds, lr, 0.03)
        idx = torch.randint(len(pools[0]), (batch,), generator=gen)
        which = torch.randint(len(pools), (batch,), generator=gen)
        which = torch.where(idx < counts[which], which, 0).to(device)  # restyled: only some pictures have one
        idx = idx.to(device)
        images = tensors[0][idx]
        for w in range(1, len(tensors)):
            version = tensors[w][idx.clamp(max=len(pools[w]) - 1)]
            images = torch.where((which == w)[:, None, None, None], version, images)
        x, labels = J.to_input(images), y[idx]
        flip = (torch.rand(batch, generator=gen) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        labels = torch.where(flip[:, None], J.flip_labels(labels), labels)
        loss = J.loss(net(augment(x, gen)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent = recent[-49:] + [loss.detach()]
        if step % 200 == 0:
            log(f"judge step {step:6d}  loss {mean_loss():.4f}  lr {opt.param_groups[0]['lr']:.2e}")
        step += 1
    net.eval()
    log(f"judge training done: {step} steps of batch {batch} in {time.time() - start:.0f}s; "
        f"loss over the last 50 steps {mean_loss():.4f}")
    return step


def evaluate(judge: J.Judge, sets: dict[str, tuple[np.ndarray, list[J.Facts]]]) -> dict[str, dict[str, float]]:
    return {name: J.accuracy(judge.read(images), truths) for name, (images, truths) in sets.items()}


def model_sets(model, device: torch.device, images: np.ndarray, captions: list[str], truth: list[J.Facts], steps: int,
               log) -> dict[str, tuple[np.ndarray, list[J.Facts]]]:
    """The held-out pictures as the model draws them: VAE round trips, restyled at strength 0.5, and samples
    from their captions alone (`model`: a loaded bundle or the weights' path)."""
    if isinstance(model, str):
        from pipeline.models import load_model

        model = load_model(model, device=str(device))
    batch, start, out = (256 if device.type == "cuda" else 16), time.time(), {}
    for name, strength in (("vae", 0.0), ("restyled-0.5", 0.5), ("samples", 1.0)):
        out[name] = (redraw_all(model, images, captions, [strength] * len(images), steps, 3, batch, math.inf), truth)
    log(f"held-out pictures drawn by the model in {time.time() - start:.0f}s")
    return out


def report(accuracy: dict[str, dict[str, float]], log) -> None:
    for name, acc in accuracy.items():
        log(f"held-out {name:>13}: " + "  ".join(f"{k} {100 * v:5.1f}%" for k, v in acc.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for judge.safetensors, judge.json, accuracy.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget for everything")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--scenes", type=int, default=60_000)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 1) - 2)))
    parser.add_argument("--model", help="demo-world weights: add the model's pictures (VAE, restyled)")
    parser.add_argument("--restyle", type=float, default=0.35, help="share of the training scenes the model re-draws")
    parser.add_argument("--restyle-min", type=float, default=0.15)
    parser.add_argument("--restyle-max", type=float, default=0.65)
    parser.add_argument("--sample-steps", type=int, default=20, help="DDIM steps of a full run of the model")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--model-held-out", type=int, help="draw only this many held-out scenes with the model (CPU)")
    parser.add_argument("--evaluate", action="store_true",
                        help="train nothing: measure the judge in --out on the held-out pictures (with --model, also on "
                             "the model's) and rewrite the accuracy in its accuracy.json")
    args = parser.parse_args(argv)

    t0 = time.time()
    total = args.minutes * 60
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / ("evaluate_log.txt" if args.evaluate else "train_log.txt"))
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    log(f"judge {'evaluation' if args.evaluate else 'training'}: device {device}, budget {total:.0f}s, torch {torch.__version__}, args {vars(args)}")

    # 1. renders (held-out from chunks of their own), in processes forked before CUDA is touched
    held_images, held_truth, held_captions = render(args.seed, HELD_OUT_CHUNK, args.held_out, args.workers, math.inf, log)
    if args.evaluate:
        sets = {"renders": (held_images, held_truth)}
        if args.model:
            n = args.model_held_out or len(held_images)
            sets.update(model_sets(args.model, device, held_images[:n], held_captions[:n], held_truth[:n],
                                   args.sample_steps, log))
        accuracy = evaluate(J.Judge.load(args.out, device), sets)
        report(accuracy, log)
        path = args.out / "accuracy.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**previous, "held_out_scenes": {k: len(v[0]) for k, v in sets.items()},
                                    "accuracy": accuracy, "evaluated_with_model": args.model}, indent=1) + "\n")
        return
    images, truth, captions = render(args.seed, 0, args.scenes, args.workers, t0 + 0.3 * total, log)
    labels = np.stack([J.labels(f) for f in truth])
    log(f"rendered {len(images)} training and {len(held_images)} held-out scenes "
        f"({len(set(captions))} distinct training captions)")
    pools, sets = [images], {"renders": (held_images, held_truth)}

    # 2. the model's pictures
    summary: dict = {}
    if args.model:
        from pipeline.models import load_model

        bundle = load_model(args.model, device=str(device))
        log(f"model {args.model}: {bundle.identity}")
        deadline = t0 + 0.45 * total
        batch = 256 if device.type == "cuda" else 16
        start = time.time()
        pools.append(redraw_all(bundle, images, captions, [0.0] * len(images), args.sample_steps, 1, batch, deadline))
        n_restyle = int(args.restyle * len(images))
        rng = np.random.default_rng(args.seed)
        strengths = list(rng.uniform(args.restyle_min, args.restyle_max, math.ceil(n_restyle / batch)))
        pools.append(redraw_all(bundle, images[:n_restyle], captions[:n_restyle], strengths, args.sample_steps, 2,
                                batch, deadline))
        log(f"model pictures: {len(pools[1])} VAE round trips, {len(pools[2])} restyled in {time.time() - start:.0f}s")
        n = args.model_held_out or len(held_images)
        sets.update(model_sets(bundle, device, held_images[:n], held_captions[:n], held_truth[:n], args.sample_steps, log))
        summary["model"] = {"spec": args.model, "identity": bundle.identity, "vae": len(pools[1]),
                            "restyled": len(pools[2])}
        del bundle
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # 3. training, until the budget's end less a reserve for saving and evaluating
    net = J.JudgeNet(args.width, args.hidden).to(device)
    parameters = sum(p.numel() for p in net.parameters())
    log(f"JudgeNet: {parameters / 1e6:.2f}M parameters")
    reserve = max(15.0, 0.05 * total) + (0.002 if device.type == "cuda" else 0.02) * sum(len(s[0]) for s in sets.values())
    seconds = max(1.0, t0 + total - reserve - time.time())
    steps = train(net, pools, torch.from_numpy(labels), device, args.batch, args.lr, seconds, gen, log)

    # 4. save, reload the float16 file, evaluate that
    J.save(net, args.out, {"training": {"scenes": len(images), "steps": steps, "batch": args.batch,
                                        "seed": args.seed, "device": str(device), **summary}})
    judge = J.Judge.load(args.out, device)
    accuracy = evaluate(judge, sets)
    result = {"held_out_scenes": {k: len(v[0]) for k, v in sets.items()}, "parameters": parameters, "steps": steps,
              "training_scenes": len(images), "device": str(device), "gpu": torch.cuda.get_device_name(0)
              if device.type == "cuda" else None, "minutes": args.minutes, "accuracy": accuracy, **summary}
    (args.out / "accuracy.json").write_text(json.dumps(result, indent=1) + "\n")
    report(accuracy, log)
    size = (args.out / J.WEIGHTS_FILE).stat().st_size
    log(f"wrote {args.out} ({size / 2**20:.2f} MiB of float16 safetensors) in {time.time() - t0:.0f}s "
        f"of the {total:.0f}s budget")


if __name__ == "__main__":
    main()
