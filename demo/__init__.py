"""`make demo`: a small, real RAG experiment on the ISO 3166-2 subdivisions shipped in `pycountry`.

- `demo.knowledge`: the knowledge base (passages), the questions, the train/development/test region
  split, the counterfactual world used for the index hot swap and a second one used only in
  training (counterfactual augmentation). Pure Python, no framework.
- `demo.pipeline`: the demo as a user of the library's commands: the data files, the fine-tune and
  evaluate command lines of each model, and the scores read from what the commands wrote.
- `demo.experiment_pt` / `demo.experiment_tf`: the experiment in PyTorch / TensorFlow (the initial
  checkpoint, `rag_pt.finetune` / `rag_tf.finetune` and the evaluate commands run as functions).
- `demo.report`: the printed table and the PNG plot.
- `demo.run`: the command line (`python -m demo.run --framework pt|tf [--quick]`) and `main(argv)`.
"""
