"""The layout's rules, read from the source: no import cycle, a floor that imports no stage and
no torch, probe and analysis standing on the floor only, benchmarks and fine-tuning in rooms
of their own, and no family-specific branch in the extraction run."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("extract", "probe", "analysis")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, module_level_only: bool = False) -> set[str]:
    """Every module a file imports (`from a.b import c` gives a.b and a.b.c)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def ours(names: set[str], known: dict[str, Path]) -> set[str]:
    return {n for n in names if n in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_even_through_imports_inside_functions():
    known = modules()
    graph = {m: ours(imports(p), known) - {m} for m, p in known.items()}
    assert cycles(graph) == []


def test_the_floor_imports_no_stage_and_no_torch_at_module_level():
    known = modules()
    floor = {m: p for m, p in known.items() if m.startswith("extract.store")}
    assert {
        "extract.store.schema",
        "extract.store.writer",
        "extract.store.config",
        "extract.store.verify",
    } <= set(floor)
    allowed_third_party = {
        "numpy",
        "zarr",
        "click",
        "numcodecs",
        "tqdm",
        "yaml",
        "google_crc32c",
        "crc32c",
    }  # tqdm: the one progress bar; yaml: YAML config files; google_crc32c: chunk checksums read directly
    for name, path in floor.items():
        for imported in imports(path):
            top = imported.split(".")[0]
            if top == "extract":
                assert (
                    imported == "extract"
                    or imported.startswith("extract.store")
                    or imported == "extract.__version__"
                ), (name, imported)
            elif top == "torch":
                assert name == "extract.store.dist" and imported not in imports(
                    path, module_level_only=True
                ), (name, imported)
            elif top == "obstore":  # object storage: an optional extra, imported where a URL is used
                assert imported not in imports(path, module_level_only=True), (name, imported)
            else:
                assert top in sys.stdlib_module_names or top in allowed_third_party, (name, imported)


# the modules of probe and analysis that read more of extract than its floor, and why
BEYOND_THE_FLOOR = {
    "probe.finetune": (
        "trains the U-Net: the one probe room that loads a model, entered only by `probe finetune`"
    ),
    "probe.bench": "benchmarks the whole workflow against on-line training, imported only by its own command",
}


def test_probe_and_analysis_stand_on_the_floor_only():
    known = modules()
    for name, path in known.items():
        if not name.startswith(("probe", "analysis")) or any(
            name == m or name.startswith(m + ".") for m in BEYOND_THE_FLOOR
        ):
            continue
        beyond = {
            i
            for i in ours(imports(path), known)
            if i.startswith("extract") and not i.startswith("extract.store") and i != "extract"
        }
        assert not beyond, (name, sorted(beyond))


@pytest.mark.parametrize("room", ["extract.bench", "probe.bench", "probe.finetune", "extract.generate"])
def test_rooms_of_their_own_are_entered_only_by_their_commands(room):
    """No module outside the room imports it at module level; only the CLIs reach in, inside a command."""
    known = modules()
    for name, path in known.items():
        if name == room or name.startswith(room + ".") or ".bench" in name:
            continue  # a benchmark may measure any room
        reached = {i for i in imports(path, module_level_only=True) if i == room or i.startswith(room + ".")}
        if name == "extract.cli":
            reached = (
                {i for i in reached if not i.startswith(("extract.bench.gpu_config", "extract.bench"))}
                if room == "extract.bench"
                else reached
            )
            reached -= {
                i for i in reached if i.startswith("extract.bench.gpu_config")
            }  # the GPU bench's option defaults, a plain dataclass
            reached = {
                i for i in reached if not i.startswith("extract.generate.commands")
            }  # the room's own click shells; they import its code inside each command
        assert not reached, (name, sorted(reached))


def test_the_extraction_run_has_no_family_branch():
    """Shared code finds a family in the registry; it never asks whether a model is latent."""
    shared = [
        "extract/run.py",
        "extract/shards.py",
        "extract/checks.py",
        "extract/store/config.py",
        "extract/cli.py",
        "extract/repair.py",
    ]
    for rel in shared:
        text = (ROOT / rel).read_text()
        assert "is_latent" not in text and "LATENT_PRESETS" not in text and "STORE_KINDS" not in text, rel
    from extract.models.families import FAMILIES, PRESET_FAMILY, block_table, family_functions, family_of_kind

    assert set(PRESET_FAMILY.values()) == {"adm", "latent", "diffusers"} and set(FAMILIES) == {
        "adm",
        "latent",
        "diffusers",
        "backbone",
        "pixels",
        "features",
        "staged",
        "timm",
    }
    assert family_functions("demo-fmnist")[1].__name__ == "extract_adm"
    assert family_functions("tiny-sd")[1].__name__ == "extract_latent"
    with pytest.raises(ValueError, match="unknown model preset 'nope'; choose one of: .*demo-fmnist"):
        family_functions("nope")
    kinds = [k for f in FAMILIES.values() for k in f.kinds]
    assert len(kinds) == len(set(kinds))  # a store kind names one family
    for name, family in FAMILIES.items():  # every row's parts resolve to what they say
        assert callable(family.part("run")) and hasattr(family.part("config"), "__dataclass_fields__"), name
        assert all(family_of_kind(k) is family for k in family.kinds), name
        if family.validate:
            assert callable(family.part("validate")) and callable(family.part("block_table")), name
    assert len(block_table("demo-fmnist")) > 0 and block_table("tiny-sd")[0].b == 1
    # SD and DiT differ only through their rows of the latent sub-family table
    for name, path in modules().items():
        assert "family ==" not in path.read_text() and "family !=" not in path.read_text(), name


def test_no_module_is_long():
    """Small, well-named modules: a few hundred lines at most."""
    long = {name: n for name, p in modules().items() if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_the_generate_commands_import_the_rooms_code_only_inside_each_command():
    path = ROOT / "extract" / "generate" / "commands.py"
    assert not {
        i
        for i in imports(path, module_level_only=True)
        if i.startswith("extract.generate") or i.startswith("torch")
    }


def _words(node: ast.AST) -> set[str]:
    """The string literals of a node: a constant, or a tuple, list or set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {w for e in node.elts for w in _words(e)}
    return set()


# the identifiers that hold a model's or a family's name
NAMED = re.compile(r"model|family|kind|preset|network|backbone|name", re.I)


def _named(node: ast.AST) -> bool:
    """Whether a node reads a value called like a model or a family (`cfg.model`, `kind`, ...)."""
    identifier = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return bool(NAMED.search(identifier))


def family_branches(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, code) of every place that tests a model's or a family's name against a literal one,
    read from the code: `cfg.model == "tiny"`, `kind in ("unet", "latent")`, `family != "adm"`,
    a `match` on one, or a lookup in a literal dict by one (`{"adm": ...}[family]`)."""
    tests = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and all(isinstance(op, tests) for op in node.ops):
            sides = (node.left, *node.comparators)
            hit = set().union(*(_words(s) for s in sides)) if any(map(_named, sides)) else set()
        elif isinstance(node, ast.Match) and _named(node.subject):
            hit = {
                p.value.value
                for p in ast.walk(node)
                if isinstance(p, ast.MatchValue) and isinstance(p.value, ast.Constant)
            }
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict) and _named(node.slice):
            hit = set().union(*(_words(k) for k in node.value.keys if k is not None))
        else:
            continue
        if hit & names:
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def family_names() -> set[str]:
    """Every name that says which family: the families, their store kinds and the models."""
    from extract.models.families import FAMILIES, MODELS

    return set(FAMILIES) | set(MODELS) | {kind for f in FAMILIES.values() for kind in f.kinds}


def test_the_family_branch_finder_finds_branches_and_only_them():
    bad = """
def run(cfg, kind):
    if cfg.model == "tiny-sd":
        pass
    weights = "ckpt" if kind in ("unet", "latent") else "weights"
    match cfg.family:
        case "adm":
            pass
    return {"backbone": 1, "pixels": 2}[kind]
"""
    names = {"tiny-sd", "unet", "latent", "adm", "backbone", "pixels"}
    assert [line for line, _ in family_branches(bad, names)] == [3, 5, 6, 9]
    fine = """
def run(cfg, families, word):
    if word in ("unet", "adm") or cfg.seed == 0:  # not a model's or a family's name
        return "unet"
    return families[cfg.model].run(cfg)
"""
    assert family_branches(fine, names) == []


def test_no_family_branch_outside_the_families_modules():
    """Shared code asks the registry (extract.models.families), never a model's or a family's
    name; only the modules of extract.models (each a family's, or the registry) may."""
    names = family_names()
    found = {
        name: hits
        for name, path in modules().items()
        if not name.startswith("extract.models.") and (hits := family_branches(path.read_text(), names))
    }
    assert not found, found
