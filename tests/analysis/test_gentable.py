"""`analysis gen-table`: one table of sample sets (FD, precision, recall, the probe accuracy of
the same weights), in the report too; bad inputs end in one line."""

from __future__ import annotations

import json

import pytest

from analysis.cli import main


def test_the_generation_table_puts_the_probe_accuracy_of_the_same_weights_beside_the_fd(tmp_path, capsys):
    from analysis.report import build_report

    samples = tmp_path / "samples-trained"
    samples.mkdir()
    (samples / "samples.json").write_text(
        json.dumps(
            {"provenance": {"model": "demo-fmnist", "weights": "demo.pt@abc", "sampler": "ddim", "steps": 50}}
        )
    )
    result = {
        "fd": 12.3456,
        "precision": 0.5,
        "recall": 0.25,
        "class_tv": 0.12345,
        "n_real": 10000,
        "n_fake": 1000,
        "metric": "FD (classifier)",
        "features": {"features": "classifier"},
        "real": {"data": "fashion-mnist", "split": "test"},
        "fake": {"kind": "folder", "path": str(samples)},
    }
    (tmp_path / "fd.json").write_text(json.dumps(result))
    probes = tmp_path / "probe_results.csv"
    probes.write_text(
        "name,model,weights,features,val_top1,test_top1\nA,demo-fmnist,demo.pt@abc,t10/b9/full,90.0,91.0\n"
        "B,demo-fmnist,demo.pt@abc,t10/b8/full,91.0,89.5\nC,demo-fmnist,random-init,t10/b8/full,95.0,95.0\n"
    )
    (tmp_path / "clf.json").write_text(json.dumps({"test_top1": 91.91}))
    with pytest.raises(SystemExit) as done:
        main(
            [
                "gen-table",
                "--fd",
                f"trained={tmp_path / 'fd.json'}",
                "--probe-table",
                str(probes),
                "--feature-net",
                str(tmp_path / "clf.json"),
                "--out",
                str(tmp_path / "gen.json"),
            ]
        )
    assert done.value.code == 0, capsys.readouterr().err
    (row,) = json.loads((tmp_path / "gen.json").read_text())["rows"]
    assert (row["fd"], row["probe_test_top1"], row["probe_features"], row["feature_net_test_top1"]) == (
        12.346,
        "89.5",
        "t10/b8/full",
        91.91,
    )
    assert (
        (tmp_path / "gen.csv")
        .read_text()
        .splitlines()[1]
        .startswith("trained,demo-fmnist,demo.pt@abc,ddim,50,1000")
    )
    # a GAN's samples record the GAN, its probe rows the encoder: the hashed weights file joins them;
    # a label without a hash joins only the same model
    for folder, model, weights in (
        ("samples-gan", "gan", "gan.pt@def"),
        ("samples-other", "other", "random-init"),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "samples.json").write_text(
            json.dumps({"provenance": {"model": model, "weights": weights}})
        )
        (tmp_path / f"fd-{model}.json").write_text(
            json.dumps({**result, "fake": {"kind": "folder", "path": str(tmp_path / folder)}})
        )
    gan_probes = tmp_path / "gan_probe_results.csv"
    gan_probes.write_text(
        probes.read_text()
        + "D,gan-encoder,gan.pt@def,b2/p4,80.0,79.0\nE,gan-encoder,gan.pt@def,b3/p4,82.0,78.5\n"
    )
    with pytest.raises(SystemExit) as done:
        main(
            [
                "gen-table",
                "--fd",
                f"gan={tmp_path / 'fd-gan.json'}",
                "--fd",
                f"other={tmp_path / 'fd-other.json'}",
                "--probe-table",
                str(gan_probes),
                "--out",
                str(tmp_path / "gen2.json"),
            ]
        )
    assert done.value.code == 0, capsys.readouterr().err
    gan, other = json.loads((tmp_path / "gen2.json").read_text())["rows"]
    assert (gan["model"], gan["probe_test_top1"], gan["probe_features"]) == ("gan", "78.5", "b3/p4")
    assert other["probe_test_top1"] is None
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "probe_results.csv").write_text(
        (tmp_path / "probe_results.csv")
        .read_text()
        .replace("name,model", "name,head,t,b,pool,train_rows,test_top5,model")
        .replace("\nA,", "\nA,linear,10,9,full,1,99,")
        .replace("\nB,", "\nB,linear,10,8,full,1,99,")
        .replace("\nC,", "\nC,linear,10,8,full,1,99,")
    )
    md, page, _ = build_report(tmp_path / "res", None, tmp_path / "rep", generation=tmp_path / "gen.json")
    text = md.read_text()
    assert "12.346" in page.read_text() and "<h2>Generation</h2>" in page.read_text()
    row = (
        "| trained | demo.pt@abc | ddim, 50 | 1000 | fashion-mnist test, 10000 images "
        "| 12.346 | 0.5 | 0.25 | - | - | 0.123 | 89.5 |"
    )
    assert "## Generation" in text and row in text


def test_the_generation_tables_bad_inputs_are_one_line_errors(tmp_path, capsys):
    not_json = tmp_path / "notes.txt"
    not_json.write_text("not json\n")
    other_json = tmp_path / "other.json"
    other_json.write_text(json.dumps({"rows": []}))
    good = tmp_path / "fd.json"
    good.write_text(
        json.dumps(
            {
                "fd": 1.0,
                "precision": None,
                "recall": None,
                "n_real": 2,
                "n_fake": 2,
                "metric": "FD (pixels)",
                "features": {"features": "pixels"},
                "real": {"path": "r.npz"},
                "fake": {"path": "f.npz"},
            }
        )
    )
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    cases = [
        (
            ["--fd", f"x={tmp_path / 'nowhere.json'}"],
            "Fréchet distance result (written by `analysis fid --out`) not found",
        ),
        (["--fd", f"x={not_json}"], "not a Fréchet distance result"),
        (["--fd", f"x={other_json}"], "not a Fréchet distance result"),
        (
            ["--fd", f"x={good}", "--probe-table", str(tmp_path / "nowhere.csv")],
            "probe results table not found",
        ),
        (["--fd", f"x={good}", "--probe-table", str(bad_csv)], "not a probe results table"),
        (["--fd", f"x={good}", "--feature-net", str(not_json)], "not a feature classifier's training record"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as done:
            main(["gen-table", *args, "--out", str(tmp_path / "gen.json")])
        err = capsys.readouterr().err
        assert (
            done.value.code == 2
            and message in err
            and len(err.strip().splitlines()) == 1
            and "Traceback" not in err
        ), (args, err)
    assert not (tmp_path / "gen.json").exists()
