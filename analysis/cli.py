"""`python -m analysis`: thin click commands over the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from extract.clikit import key_options, user_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """diffprobe analysis: plots from probe results."""


@cli.command()
@click.option("--results", "runs", multiple=True, help="LABEL=results.json of a probe run (repeat; a repeated LABEL pools its runs)")
@click.option("--table", type=click.Path(path_type=Path), help="a probe_results.csv: one point per run, a line per model and weights")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="figure path (.png; an .svg is written beside it)")
@click.option("--title", default="linear probe accuracy")
@user_errors
def curves(runs, table, out, title):
    """Accuracy vs t, b and pool: the validation-best member (or run) per value, its test accuracy."""
    from analysis.curves import members_from_table, plot_curves
    from probe.tables import read_results, read_table

    if bool(runs) == bool(table):
        raise ValueError("give either --results LABEL=FILE (repeatable) or --table FILE")
    members, sources = {}, {}
    if table:
        if not table.is_file():
            raise FileNotFoundError(f"results table not found: {table}")
        members = members_from_table(read_table(table))
        sources = {"table": [str(table)]}
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected LABEL=PATH")
        result = read_results(path)
        members.setdefault(label, []).extend(result["members"])
        sources.setdefault(label, []).append(Path(result["stores"]["train"]["path"]).name)
    fig = plot_curves(members, title, "\n".join(f"{label}: {', '.join(names)}" for label, names in sources.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    click.echo(f"written: {out} and {out.with_suffix('.svg')}")


@cli.command()
@click.option("--results", "runs", multiple=True, required=True, help="LABEL=results.json of a probe run (repeat; a repeated LABEL pools its runs)")
@click.option("--by", "axis", type=click.Choice(["t", "b", "pool"]), default="pool", help="one row per value of this axis")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), help="also write every member (validation and test top-1) as CSV")
@user_errors
def best(runs, axis, csv_out):
    """The validation-best member for each value of t, b or pool (test only reported)."""
    import csv

    from analysis.curves import best_table, member_row

    members = _members(runs)
    rows = best_table(members, axis)
    click.echo(f"{'run':<16} {axis:>5}  {'features':<24} {'lr':>7} {'val top-1':>9} {'test top-1':>10}")
    for r in rows:
        click.echo(f"{r['run']:<16} {str(r['value']):>5}  {r['features']:<24} {r['lr']!s:>7} {r['val_top1']:>9.2f} {r['test_top1']:>10.2f}")
    if csv_out:
        every = [member_row(label, m) for label, ms in members.items() for m in ms]
        csv_out.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(every[0]))
            writer.writeheader()
            writer.writerows(every)
        click.echo(f"written: {csv_out} ({len(every)} members)")


def _members(runs) -> dict[str, list[dict]]:
    from probe.tables import read_results

    members: dict[str, list[dict]] = {}
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected LABEL=PATH")
        members.setdefault(label, []).extend(read_results(path)["members"])
    return members


@cli.command()
@click.option("--store", "stores", multiple=True, required=True, type=click.Path(path_type=Path), help="one store (layer x layer) or two (A x B)")
@click.option("--labels", default="A,B", help="names of the two stores in the figure")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="figure (.png; .svg and .json beside it)")
@click.option("--title", default="linear CKA")
@key_options(what="keys to compare [default: every key in the store]")
@click.option("--kernel", type=click.Choice(["linear", "rbf", "minibatch"]), default="linear",
              help="linear: exact, streamed; rbf: bandwidth x median distance (<= --max-rows images); minibatch: unbiased HSIC over minibatches")
@click.option("--max-rows", type=click.IntRange(min=4), default=5000, help="rbf: most images (n x n kernels)")
@click.option("--batch", type=click.IntRange(min=4), default=256, help="minibatch: rows per minibatch")
@click.option("--seed", type=int, default=0, show_default=True, help="minibatch: the seeded row order (batches mix classes on class-sorted stores)")
@click.option("--progress/--no-progress", default=True)
@user_errors
def cka(stores, labels, out, title, ts, blocks, pools, kernel, max_rows, batch, seed, progress):
    """Linear CKA between every cached (t, b, pool) of one store, or of two stores on the same images."""
    from analysis.compare import cka_map, plot_cka

    if len(stores) > 2:
        raise ValueError("give one or two --store")
    names = tuple((labels.split(",") + ["A", "B"])[:2])
    if "all" in blocks:
        blocks = ()
    filters = dict(ts=ts, bs=blocks, pools=pools)
    result = cka_map(stores[0], stores[1] if len(stores) == 2 else None, names, kernel=kernel, max_rows=max_rows, batch=batch, seed=seed, progress=progress, **filters)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_cka(result, title)
    fig.savefig(out, dpi=130)
    fig.savefig(out.with_suffix(".svg"))
    out.with_suffix(".json").write_text(json.dumps({"rows": result.rows, "cols": result.cols, "cka": result.matrix.round(6).tolist(),
                                                    "images": result.n, "kernel": result.kernel, "sources": result.sources,
                                                    **({"batch": batch, "seed": seed} if kernel == "minibatch" else {})}, indent=1) + "\n")  # fmt: skip
    click.echo(f"written: {out} ({len(result.rows)} x {len(result.cols)} CKA over {result.n} images)")


@cli.command()
@click.option("--real", required=True, type=click.Path(path_type=Path), help="the reference store (e.g. real images' features)")
@click.option("--fake", required=True, type=click.Path(path_type=Path), help="the store compared to it (e.g. samples' features)")
@click.option("--key", "key_label", help="the feature key, e.g. t0/b4/p1 [default: the one key both stores hold]")
@click.option("--k", type=click.IntRange(min=1), default=3, help="neighbours for precision and recall")
@click.option("--pr-rows", type=click.IntRange(min=4), default=5000, help="rows of each store sampled for precision and recall")
@click.option("--out", type=click.Path(path_type=Path), help="also write the result as JSON")
@user_errors
def fd(real, fake, key_label, k, pr_rows, out):
    """Fréchet distance, precision and recall between two stores' features at one key."""
    import dataclasses

    from analysis.distance import store_distance
    from extract.schema import FeatureKey

    result = store_distance(real, fake, FeatureKey.parse(key_label) if key_label else None, k=k, pr_rows=pr_rows)
    click.echo(result.line())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/cka.json"))
@click.option("--sizes", default="2000,10000,50000", help="numbers of images")
@user_errors
def bench(out, sizes):
    """Streamed linear CKA vs the Gram-matrix version: time and peak memory against n."""
    from analysis.bench import bench_cka, format_table

    rows = bench_cka(_ints(sizes))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    click.echo(format_table(rows))
    click.echo(f"written: {out}")


@cli.command()
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"), help="probe results folder")
@click.option("--cka", "cka_dir", type=click.Path(path_type=Path), help="folder of CKA maps (PNG + JSON)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"))
@click.option("--title", default="diffprobe report")
@user_errors
def report(results, cka_dir, out, title):
    """One Markdown report: accuracy table, ablation curves, CKA maps."""
    from analysis.report import build_report

    click.echo(f"written: {build_report(results, cka_dir, out, title)}")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected a comma list of integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="python -m analysis")
