"""Decisions: scores -> accept/reject. ``scorer`` is the decision home every command goes
through; ``model`` the calibrated decision model; ``thresholds`` the threshold rules;
``calibration`` the trial maths; ``calibrate`` fitting a store's calibration from labelled
recordings; ``plot`` its figure; ``timeline`` who speaks when along one recording, and
``turns`` the path over its windows (Viterbi, second pass, where the turns change).
"""
