"""`make bench-gpu`'s printed report: the grid, the loader, and in quick mode the store read and the
bit-identity check."""

from __future__ import annotations


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _failed(error: str) -> str:
    return error if error.startswith("skipped") else f"failed: {error}"


def format_report(result: dict) -> str:
    """The grid (and loader) as a table; in quick mode also the store's read rate and the
    bit-identity check."""
    m = result["machine"]
    quick = result.get("mode") == "quick"
    lines = [
        f"{m['device']}, torch {m['torch']}, {_num(result['gflop_per_image'], '.4g')} GFLOP per image, "
        f"peak {_num(result['peak_tflops'], '.0f')} TFLOP/s bf16 ({result['peak_source']})"
        + (f"; quick mode, {result['seconds']:.0f} s" if quick else ""),
    ]
    if result.get("extraction_error"):
        lines.append(f"extraction {_failed(result['extraction_error'])}")
    else:
        case = f"{'model':<14} {'b':>3} {'batch':>5} {'dtype':>5} {'ch_last':>7} {'compile':>7}"
        lines.append(f"{case} {'img/s':>8} {'TFLOP/s':>8} {'of peak':>7} {'GB':>6} {'warm s':>7}")
    for r in result["extraction"]:
        head = (
            f"{r['model']:<14} {r['block']:>3} {r['batch']:>5} {r['dtype']:>5} "
            f"{str(r['channels_last']):>7} {str(r['compile']):>7}"
        )
        if r["error"]:
            lines.append(f"{head}  {_failed(r['error'])}")
            continue
        frac = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}%"
        memory = _num(r["peak_memory_gb"], ".1f")
        speed = f"{r['images_per_s']:>8.1f} {r['tflops']:>8.3g} {frac:>7}"
        lines.append(f"{head} {speed} {memory:>6} {r['warmup_s']:>7.1f}")
    if result.get("loader_error"):
        lines.append(f"loader {_failed(result['loader_error'])}")
    for r in result["loader"]:
        lines.append(
            f"loader: {r['workers']:>2} workers  {r['images_per_s']:>8.1f} img/s  "
            f"({r['images']} JPEGs, {r['errors']} errors)"
        )
    if result["loader_keeps_up"] is not None:
        verdict = "keeps up" if result["loader_keeps_up"] else "does NOT keep up"
        lines.append(
            f"data loading {verdict}: best loader {result['best_loader_images_per_s']:.1f} img/s "
            f"vs best extraction {result['best_extraction_images_per_s']:.1f} img/s"
        )
    if "store_read" in result:
        lines += _store_read_lines(result["store_read"])
    if "bit_identity" in result:
        lines += _identity_lines(result["bit_identity"])
    return "\n".join(lines)


def _store_read_lines(r: dict) -> list[str]:
    if r.get("error"):
        return [f"store read {_failed(r['error'])}"]
    return [
        f"store read: {r['rows']} rows x {r['row_shape']} {r['dtype']} "
        f"({r['mb']} MB, {r['shards']} shards of {r['shard_rows']}), "
        f"warm page cache, best of {r['repeats']}; values {'match' if r['matches'] else 'DIFFER'}",
        f"  store.array(key)[a:b] by shard ({r['reader']}): "
        f"{r['store_mb_per_s']:.0f} MB/s ({r['store_rows_per_s']:.0f} rows/s); "
        f"np.load of the same bytes: {r['numpy_mb_per_s']:.0f} MB/s; "
        f"store takes {r['store_over_numpy']:.2f}x numpy's time",
    ]


def _identity_lines(r: dict) -> list[str]:
    if r.get("error"):
        return [f"bit identity ({r['model']}): {_failed(r['error'])}"]
    verdict = {True: "identical", False: "NOT identical", None: "unknown"}[r["identical"]]
    lines = [
        f"bit identity: {r['model']} (random weights), {r['images']} images extracted twice, batch sizes "
        f"{' and '.join(map(str, r['batch_sizes']))} (micro-batch {r['micro_batch']}): {verdict}"
    ]
    for run in r["runs"]:
        if run["error"]:
            lines.append(f"  {run['dtype']:>5}: {_failed(run['error'])}")
        else:
            same = "identical" if run["identical"] else "NOT identical"
            lines.append(
                f"  {run['dtype']:>5}: {same}, max abs diff {run['max_abs_diff']:.3g} "
                f"over {', '.join(run['keys'])} ({run['seconds']:.1f} s)"
            )
    return lines
