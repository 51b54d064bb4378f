from gptjax.eval.learning_curves import crossings


def test_crossing_time_is_the_first_evaluation_below_each_line():
    records = [{"step": 1, "elapsed": 10.0, "val_bpc": 3.0}, {"step": 2, "elapsed": 20.0, "train_loss": 1.0},
               {"step": 3, "elapsed": 30.0, "val_bpc": 2.2}, {"step": 4, "elapsed": 40.0, "val_bpc": 2.0},
               {"step": 5, "elapsed": 50.0, "val_bpc": 2.1}]
    assert crossings(records, {3: 2.5, 5: 2.1, 7: 1.9}) == {3: 30.0, 5: 40.0, 7: None}
