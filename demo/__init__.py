"""`make demo`: a small, real RAG experiment on the ISO 3166-2 subdivisions shipped in `pycountry`.

- `demo.knowledge`: the knowledge base (passages), the questions, the train/held-out split, the
  counterfactual world used for the index hot swap and a second one used only in training
  (counterfactual augmentation). Pure Python, no framework.
- `demo.experiment_pt` / `demo.experiment_tf`: the experiment in PyTorch / TensorFlow.
- `demo.report`: the printed table and the PNG plot.
- `demo.run`: the command line (`python -m demo.run --framework pt|tf [--quick]`) and `main(argv)`.
"""
