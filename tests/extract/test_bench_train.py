"""The model card's architecture table: every candidate numbers 37 blocks, and b=24 sits where
the card says (the shipped one's at ADM-256's place, 1/8 scale)."""


def test_candidates_have_37_blocks_and_b24_where_the_card_says(monkeypatch):
    from extract.bench import train as bench_train

    monkeypatch.setattr(
        bench_train, "time_training", lambda preset, batch, steps, warmup: float(preset.image_size)
    )
    rows = {r["candidate"]: r for r in bench_train.bench_train(batch=2, steps=1)}
    shipped = rows["adm256/8 (shipped)"]
    assert all(r["blocks"] == 37 for r in rows.values())
    assert shipped["b24"] == "output_blocks.4 128x2x2" and shipped["parameters"] == 8_673_505
    assert rows["28x28, channel_mult 1,2,2, 5 res blocks, attention at 7"]["b24"].endswith("x7x7")
    assert rows["adm256/8, channel_mult 1,1,2,2,2,2"]["parameters"] < shipped["parameters"]


def test_training_rate_is_measured():
    from extract.bench.train import time_training
    from extract.models.adm_presets import get_preset

    assert time_training(get_preset("tiny"), batch=2, steps=1, warmup=0) > 0
