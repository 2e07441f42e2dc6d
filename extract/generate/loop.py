"""The step loop the demo U-Net's and the BiGAN's trainers share.

A trainer gives its own step, checkpoint and snapshot; the loop resumes from the run folder's
checkpoint, draws a bar, writes a log row every `log_every` steps (and at the last step) with
the step's numbers, prints a line with this sitting's rate and the ETA, checkpoints every
`save_every` steps, at the end and when the wall-time budget runs out, and keeps a snapshot
every `keep_every` steps. A step's randomness comes from (seed, step) inside the trainer's step,
so where the loop stops and resumes never changes what is trained.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from extract.store import progress


@dataclass(frozen=True)
class LoopPlan:
    name: str  # what the bar and log lines call the run ("demo-fmnist", "bigan")
    max_steps: int
    batch_size: int
    log_every: int
    save_every: int
    keep_every: int | None = None
    max_minutes: float | None = None  # stop, after a checkpoint, when this much training time has passed
    # stop, after a checkpoint, at this step (the schedule is still max_steps long)
    stop_step: int | None = None


def run_steps(
    plan: LoopPlan,
    step: int,
    seconds: float,
    one_step: Callable[[int], dict[str, float]],
    checkpoint: Callable[[int, float], None],
    snapshot: Callable[[int], None],
    log_path: Path,
    describe: Callable[[dict[str, float]], str],
) -> tuple[int, float]:
    """Run steps `step`..last-1, last = min(max_steps, stop_step) (one_step(k) trains step k and
    returns its numbers), from `seconds` of training already done; returns (steps done, training
    seconds) at the end."""
    start = time.monotonic() - seconds
    first, resumed_at = step, seconds
    last = min(plan.max_steps, plan.stop_step or plan.max_steps)
    bar = progress.bar(total=last, initial=step, unit="step", desc=f"train {plan.name}")
    with open(log_path, "a") as log:
        while step < last:
            stats = one_step(step)
            step += 1
            seconds = time.monotonic() - start
            bar.update(1)
            bar.set_postfix_str(describe(stats), refresh=False)
            if step % plan.log_every == 0 or step == last:
                # this sitting's rate, not the run's
                img_s = (step - first) * plan.batch_size / max(seconds - resumed_at, 1e-9)
                eta = (last - step) * plan.batch_size / img_s
                progress.line(
                    True,
                    f"train {plan.name}: step {step}/{last}, {describe(stats)}, {img_s:.0f} img/s, "
                    f"ETA {progress._clock(eta)}",
                )
                log.write(
                    json.dumps(
                        {
                            "step": step,
                            "images": step * plan.batch_size,
                            **stats,
                            "seconds": round(seconds, 1),
                        }
                    )
                    + "\n"
                )
                log.flush()
            out_of_time = plan.max_minutes is not None and seconds >= 60 * plan.max_minutes
            if step % plan.save_every == 0 or step == last or out_of_time:
                checkpoint(step, seconds)
            if plan.keep_every and step % plan.keep_every == 0:
                snapshot(step)
            if out_of_time:
                break
    bar.close()
    checkpoint(step, seconds)
    return step, seconds
