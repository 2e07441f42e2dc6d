"""`extract schedule`: what each timestep means in a diffusion model's own noise schedule."""

from __future__ import annotations

import click

from extract.cli_generated import generated, given_value
from extract.cli_run import BLOCKS_DEFAULT, blocks_params, run_forms
from extract.store.cli_options import converted, float_list, int_list, user_errors

DEFAULT_TS = (0, 10, 25, 50, 90, 100, 150, 200, 300, 500, 700, 900, 999)


def schedule_params(args: list[str]) -> list[click.Parameter]:
    """The model and its network options (as `extract blocks` takes them), the rows to show."""
    return [
        *blocks_params(args),
        click.Option(
            ["-t", "--t", "ts"],
            multiple=True,
            callback=int_list,
            help="timesteps to show, repeated or comma-separated [default: 0, 10, 25 ... and the last]",
        ),
        click.Option(
            ["--log-snr", "log_snrs"],
            multiple=True,
            callback=float_list,
            help="also show the timestep nearest each of these log-SNRs (what `extract run --log-snr` picks)",
        ),
    ]


def schedule_table(model: str, options, ts: tuple[int, ...], log_snrs: tuple[float, ...]) -> str:
    """The model's schedule at the given t (default: a spread up to its last step) and at the
    t nearest each log-SNR."""
    from extract.models.families import noise_schedule
    from extract.models.schedules import format_table, ts_for_log_snr

    schedule = noise_schedule(model, options)
    shown = ts or tuple(t for t in DEFAULT_TS if t < schedule.steps - 1) + (schedule.steps - 1,)
    nearest = ts_for_log_snr(schedule, log_snrs)
    return format_table(schedule, sorted(set(shown) | set(nearest)))


@generated(
    schedule_params, forms=run_forms, subject=lambda args: given_value(args, "--model") or BLOCKS_DEFAULT
)
@user_errors
def schedule(model: str, ts, log_snrs, **values):
    """Print t -> the network's input t, alpha_t, sigma_t, alpha-bar_t and log-SNR in the model's
    own schedule (x_t = alpha_t x0 + sigma_t eps)."""
    from extract.models.families import model_family

    family = model_family(model)
    if family.schedule is None:
        raise ValueError(f"{model} has no noise schedule: only diffusion models see a noisy image")
    options = family.part("options")(**converted(family.part("options"), values))
    click.echo(schedule_table(model, options, ts, log_snrs))
