"""How long and how fast a run trains, and the plan that fits the time a learner has.

- ``schedule``: SGD with nnU-Net's poly learning rate, wall-clock budgets and the named workshop schedules.
- ``planner``: the plan a time budget can train (``tutorseg.plan(fp, budget="10min")``), each candidate's
  training step measured on the device.
- ``smoke``: a shrunken plan that runs the whole pipeline in seconds (notebooks' ``SMOKE`` mode, the tests).
"""
