"""The stacker: a calibrated P(good) from the models' scores and the memory's evidence, learned from
a few dozen verdicts."""

import numpy as np

from finch.learning.stacker import Stacker, stack_inputs


def verdicts(n, seed=0):
    """Answers whose evidence (the first input) predicts their verdict; the second input is noise."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        support = rng.uniform(0, 1)
        yield [support, rng.normal()], bool(rng.random() < support**3)


def test_nothing_is_trusted_before_enough_verdicts():
    stacker = Stacker()
    for inputs, good in verdicts(29):
        stacker.observe(inputs, good)
    assert stacker.p_good([1.0, 0.0]) == 0.0


def test_it_learns_which_input_predicts_a_good_answer_and_is_calibrated():
    stacker = Stacker()
    for inputs, good in verdicts(2000):
        stacker.observe(inputs, good)
    assert stacker.p_good([0.95, 0.0]) > 0.7 > 0.2 > stacker.p_good([0.3, 0.0])
    # Calibrated where it matters: held-out answers it scores >= 0.7 are good about that often.
    held = list(verdicts(4000, seed=1))
    confident = [good for inputs, good in held if stacker.p_good(inputs) >= 0.7]
    scores = [stacker.p_good(inputs) for inputs, _ in held if stacker.p_good(inputs) >= 0.7]
    assert abs(np.mean(confident) - np.mean(scores)) < 0.05


def test_save_and_load_give_the_same_scores():
    stacker = Stacker()
    for inputs, good in verdicts(137):
        stacker.observe(inputs, good)
    again = Stacker.from_state(stacker.to_state())
    probes = [inputs for inputs, _ in verdicts(50, seed=2)]
    assert [again.p_good(p) for p in probes] == [stacker.p_good(p) for p in probes]
    for inputs, good in verdicts(20, seed=3):  # and they go on learning alike
        stacker.observe(inputs, good)
        again.observe(inputs, good)
    assert [again.p_good(p) for p in probes] == [stacker.p_good(p) for p in probes]


def test_model_scores_enter_as_logits():
    assert stack_inputs(0.5, 0.5, [0.3]) == [0.0, 0.0, 0.3]
    high, low = stack_inputs(1.0, 0.0, [])
    assert high > 9 and low < -9  # clipped, finite


def test_a_separable_history_gives_a_finite_fit():
    # One input splits good from bad perfectly and another barely varies: the fit must not run away.
    stacker = Stacker()
    rng = np.random.default_rng(4)
    for i in range(600):
        good = i % 9 != 0
        stacker.observe([5.0 if good else -5.0, 0.9994 + 1e-4 * rng.normal(), rng.normal()], good)
    _, _, weights, bias = stacker._fit
    assert np.all(np.abs(weights) < 50) and abs(bias) < 50
    assert stacker.p_good([5.0, 0.9994, 0.0]) > 0.95 > 0.05 > stacker.p_good([-5.0, 0.9994, 0.0])
