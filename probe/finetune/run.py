"""The fine-tuning loop: resumable state, EMA, epoch selection on validation, one test
evaluation, results in the probe's format (probe/finetune/results.py) and the exported weights.
Loads a U-Net (see probe/finetune/model.py); never imported by the cached-feature path."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extract.checkpoints import load_state, save_atomic
from extract.data.registry import open_dataset
from extract.data.sources import subset_indices
from extract.models.adm import load_unet
from extract.models.adm_presets import get_preset
from extract.store import progress
from extract.store.cli_options import invocation
from extract.store.dist import process_group
from extract.store.schema import FeatureKey
from probe.config import TrainSettings
from probe.finetune.model import (
    EVAL_VIEW,
    STATE_FILE,
    TRAIN_VIEW_BASE,
    FinetuneConfig,
    PrefixClassifier,
    epoch_order,
    images,
    noised,
    trainable_parameters,
    use_grad_checkpointing,
    validate,
)
from probe.finetune.results import Outcome, TestScores, run_fields, run_name, write_results
from probe.grid import FeatureSet, head_for, lr_factor
from probe.heads import parse_head_options
from probe.metrics import accuracy
from probe.reader import carve_validation
from probe.tensorboard import write_history

OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, momentum=0.0, weight_decay=0.0),
    "adamw": lambda groups: torch.optim.AdamW(groups, weight_decay=0.0),
}


def schedule(opts: dict) -> TrainSettings:
    """The recipe's lr schedule as the probe grid's: "step" is x0.1 every 7 epochs (diffssl's
    StepLR(7, 0.1)), "cosine" decays to 0 over the run; no warmup."""
    return TrainSettings(epochs=opts["epochs"], schedule=opts["schedule"], step_epochs=7, gamma=0.1)


@torch.no_grad()
def evaluate(
    net: PrefixClassifier,
    source,
    rows: np.ndarray,
    preset,
    cfg: FinetuneConfig,
    device,
    batch: int = 256,
    k: int = 5,
) -> np.ndarray:
    """Top-k predicted classes of the rows, best first, (n, k): center crop, the evaluation noise
    draw (extraction's view 0)."""
    net.eval()
    preds = []
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        x = noised(
            preset, images(source, part, preset, seed=cfg.seed, epoch=None), part, cfg.t, cfg.seed, EVAL_VIEW
        )
        logits = net(x.to(device)).float()
        preds.append(logits.topk(min(k, logits.shape[1]), dim=1).indices.cpu().numpy())
    net.train()
    return np.concatenate(preds) if preds else np.zeros((0, k), np.int64)


def finetune(cfg: FinetuneConfig) -> dict:
    """Train, select the epoch on validation, test once; returns the results dict (rank 0)."""
    validate(cfg)
    preset = get_preset(cfg.model)
    block = cfg.block or preset.default_block
    opts = cfg.resolved()
    with process_group(cfg.device) as (world, device):
        with progress.run_log(
            Path(cfg.results), run_name(cfg, preset, block), enabled=world.is_main
        ) as log_file:
            progress.LOG.info("arguments: %s", json.dumps(invocation() or {"config": run_fields(cfg)}))
            progress.LOG.info("resolved recipe %s: %s", cfg.recipe, json.dumps(opts))
            result = _finetune(cfg, preset, block, opts, device, world, log_file)
            if result and cfg.tensorboard is not None:
                progress.LOG.info(
                    "tensorboard: %s",
                    write_history(Path(cfg.tensorboard) / result["name"], result["history"]),
                )
            if result:
                progress.LOG.info(
                    "result: test top-1 %.2f on %d images (epoch %s); weights in %s",
                    result["test"]["top1"],
                    result["test"]["rows"],
                    result["head"]["epoch"],
                    result["exported"],
                )
            return result


@dataclass
class _Splits:
    train_src: object
    test_src: object
    train_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray


def _splits(cfg, val_fraction: float) -> _Splits:
    """Train rows (a seeded --limit), the validation carve of them that picks the epoch, and the test rows."""
    train_src = open_dataset(cfg.data, cfg.data_root, cfg.train_split)
    test_src = open_dataset(cfg.data, cfg.data_root, cfg.test_split)
    rows = subset_indices(len(train_src), cfg.limit, cfg.seed)
    val_mask = carve_validation(
        train_src.labels[rows].astype(np.int64), np.ones(len(rows), bool), val_fraction, cfg.seed
    )
    return _Splits(
        train_src,
        test_src,
        rows[~val_mask],
        rows[val_mask],
        subset_indices(len(test_src), cfg.test_limit, cfg.seed),
    )


def _network(cfg, preset, block, opts, classes: int, device):
    """The U-Net up to block b with the head on top; its trainable parameters; the optimizer."""
    unet, weights = load_unet(preset, cfg.ckpt or None, random_init=cfg.random_init, seed=cfg.seed)
    if opts["fp16_weights"]:
        # guided-diffusion's own fp16 path: convolutions in fp16, the forward cast to it
        unet.convert_to_fp16()
        unet.dtype = torch.float16
    named = trainable_parameters(unet, block, cfg.freeze_blocks, cfg.trainable)
    if cfg.grad_checkpoint:
        use_grad_checkpointing(unet, block)
    key = FeatureKey(cfg.t, block, cfg.pool)
    with torch.no_grad():
        probe_x = torch.zeros(1, preset.in_channels, preset.image_size, preset.image_size)
        shape = tuple(
            PrefixClassifier(unet, nn.Identity(), cfg.t, block, cfg.pool).features(probe_x).shape[1:]
        )
    torch.manual_seed(cfg.seed)
    head = head_for(
        cfg.head, FeatureSet((key,), shape, (shape,)), classes, parse_head_options(list(cfg.head_options))
    )
    net = PrefixClassifier(unet, head, cfg.t, block, cfg.pool).to(device).train()
    groups = [
        {"params": [p for _, p in named], "lr": opts["lr"], "base": opts["lr"]},
        {"params": list(head.parameters()), "lr": opts["head_lr"], "base": opts["head_lr"]},
    ]
    opt = OPTIMIZERS[opts["optimizer"]]([g for g in groups if g["params"]])
    return net, head, named, opt, weights, key


def _resume(state_path: Path, cfg, net, opt, ema, device):
    """(step, seconds, best, ema, log) from a saved state made with the same arguments, or a fresh
    start. The log holds the per-epoch history and the test scores taken along the way."""
    state = load_state(
        state_path,
        "cpu",
        run_fields(cfg),
        needs=("net", "opt", "ema", "step", "seconds", "best"),
        kind="fine-tuning",
    )
    if state is None:
        return 0, 0.0, {"val_top1": -1.0, "epoch": -1, "state": None}, ema, {"epochs": [], "test": []}
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    if ema is not None:
        ema = [e.to(device) for e in state["ema"]]
    log = state.get("log", {"epochs": [], "test": []})
    return int(state["step"]), float(state["seconds"]), state["best"], ema, log


def _finetune(cfg, preset, block, opts, device, world, log_file=None) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _splits(cfg, opts["val_fraction"])
    train_src, test_src = data.train_src, data.test_src
    train_rows, val_rows, test_rows = data.train_rows, data.val_rows, data.test_rows
    batch, epochs = opts["batch_size"], opts["epochs"]
    if batch % world.size:
        raise ValueError(f"--batch-size {batch} does not split evenly over {world.size} processes")
    steps_per_epoch = len(train_rows) // batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_rows)} training images make no full batch of {batch}; lower --batch-size"
        )

    net, head, named, opt, weights, key = _network(cfg, preset, block, opts, len(train_src.classes), device)
    params = [p for _, p in named] + list(head.parameters())
    ema = [p.detach().clone() for p in params] if cfg.ema_rate else None
    model = torch.nn.parallel.DistributedDataParallel(net) if world.size > 1 else net
    state_path = out / STATE_FILE
    step, seconds, best, ema, log = _resume(state_path, cfg, net, opt, ema, device)
    # this epoch's training loss so far (an epoch cut by a resume counts from the resume)
    summed, counted = 0.0, 0

    def snapshot() -> dict:
        """The weights evaluation uses: the EMA's when kept, else the live ones (CPU copies)."""
        s = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        if ema is not None:
            names = {id(p): n for n, p in net.named_parameters()}
            for p, e in zip(params, ema):
                s[names[id(p)]] = e.detach().cpu().clone()
        return s

    def scored(source, rows) -> float:
        """Top-1 of the weights evaluation uses (the EMA's when kept), training resumed after."""
        live = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(snapshot())
        top1 = accuracy(evaluate(net, source, rows, preset, cfg, device), source.labels[rows])["top1"]
        net.load_state_dict(live)
        return top1

    def end_epoch(epoch: int, val: float | None) -> None:
        """The epoch's history entry (mean train loss, the lr it ended at, validation top-1) and its
        progress line."""
        nonlocal summed, counted
        entry = {
            "epoch": epoch + 1,
            "train_loss": round(summed / max(counted, 1), 6),
            "lr": opt.param_groups[0]["lr"],
            "val_top1": val,
        }
        log["epochs"].append(entry)
        summed, counted = 0.0, 0
        progress.line(
            cfg.progress and world.is_main,
            f"finetune epoch {epoch + 1}/{epochs}: train loss {entry['train_loss']:.4f}"
            + ("" if val is None else f", validation top-1 {val:.2f}")
            + f", {step * batch / max(seconds, 1e-9):.1f} img/s",
        )

    def save() -> None:
        if world.is_main:
            save_atomic(
                state_path,
                {
                    "config": run_fields(cfg),
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "ema": ema,
                    "step": step,
                    "seconds": seconds,
                    "best": best,
                    "log": log,
                },
            )
        world.barrier()

    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bf16" else contextlib.nullcontext()
    )
    total = epochs * steps_per_epoch
    lr_schedule = schedule(opts)
    bar = progress.bar(
        cfg.progress and world.is_main,
        total=total * batch,
        initial=step * batch,
        unit="img",
        desc=f"finetune b={block}",
    )
    started = time.perf_counter() - seconds
    while step < total:
        epoch, s = divmod(step, steps_per_epoch)
        order = train_rows[epoch_order(len(train_rows), cfg.seed, epoch)]
        # this rank's share of the global batch
        part = order[s * batch : (s + 1) * batch][world.rank :: world.size]
        x0 = images(train_src, part, preset, seed=cfg.seed, epoch=epoch, aug=opts["aug"])
        x_t = noised(preset, x0, part, cfg.t, cfg.seed, TRAIN_VIEW_BASE + epoch)
        y = torch.from_numpy(train_src.labels[part].astype(np.int64)).to(device)
        factor = lr_factor(lr_schedule, epoch, s, steps_per_epoch)
        for g in opt.param_groups:
            g["lr"] = g["base"] * factor
        with autocast:
            loss = nn.functional.cross_entropy(model(x_t.to(device)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for p, e in zip(params, ema):
                    e.mul_(cfg.ema_rate).add_(p.detach(), alpha=1 - cfg.ema_rate)
        step += 1
        seconds = time.perf_counter() - started
        bar.update(batch)
        summed, counted = summed + loss.item(), counted + 1
        bar.set_postfix(loss=f"{summed / counted:.3f}", epoch=epoch + 1)
        epoch_end = step % steps_per_epoch == 0
        if epoch_end and opts["eval_every"] and (epoch + 1) % opts["eval_every"] == 0:
            # reported along the way, never chosen on
            log["test"].append([epoch + 1, scored(test_src, test_rows)])
        if epoch_end and not len(val_rows):
            # no validation: the last epoch is the one reported
            best = {"val_top1": None, "epoch": epoch + 1, "state": None}
            end_epoch(epoch, None)
            save()
        elif epoch_end:
            # score validation, keep the best epoch's weights
            val = scored(train_src, val_rows)
            if val > best["val_top1"]:
                best = {"val_top1": val, "epoch": epoch + 1, "state": snapshot()}
            end_epoch(epoch, val)
            save()
        elif step % cfg.checkpoint_every == 0:
            save()
    bar.close()
    if not world.is_main:
        return {}
    if best["state"] is None:
        best["state"] = snapshot()
    net.load_state_dict(best["state"])
    predicted = evaluate(net, test_src, test_rows, preset, cfg, device)
    scores = accuracy(predicted, test_src.labels[test_rows])
    dataset = {
        "name": test_src.name,
        "split": test_src.split,
        "fingerprint": test_src.fingerprint(),
        "rows": len(test_rows),
    }
    test = TestScores(
        scores["top1"], scores["top5"], test_rows, test_src.labels[test_rows], predicted[:, 0], dataset
    )
    export = out / "finetuned.pt"
    prefix = {k.removeprefix("unet."): v for k, v in best["state"].items() if k.startswith("unet.")}
    torch.save(prefix, export)
    trainable = sum(p.numel() for _, p in named) + sum(p.numel() for p in head.parameters())
    outcome = Outcome(
        cfg=cfg,
        preset=preset,
        block=block,
        opts=opts,
        weights=weights,
        key=key,
        trainable=trainable,
        best=best,
        log=log,
        test=test,
        n_train=len(train_rows),
        n_val=len(val_rows),
        seconds=seconds,
        export=export,
        log_file=log_file,
    )
    return write_results(outcome)
