"""Fine-tuning the VQA engine on a workspace dataset, resumable after a kill.

One function, ``finetune``, that any VQA model plugs into through a small adapter
(``VQAAdapter``): how to batch (image, question, answer) triples, the loss, batched prediction,
and how to save/load a checkpoint folder. The steps, checkpoints, resume and best-checkpoint
choice are the shared loop's (``builder.core.training.train_loop``); this module adds the
data split, replay mixing and the recipe's rules for which checkpoint is best.
Adapters ship for the shapes-world default VQA model (``ShapesVQAAdapter``) and for
Hugging Face BLIP (``BlipVQAAdapter``, the ``HFVQA`` backend).

A run lives in one folder (``Workspace.dir("checkpoints", run)``)::

    run.json                  config, data fingerprint and the train/validation split (fixed at start)
    epoch-0001/ ...           one checkpoint per epoch: the adapter's save_pretrained-style folder
                              (safetensors) + trainer_state.pt (optimizer, step) + state.json
    history.json              loss curve: per-step training loss and per-epoch validation figures
    result.json               before/after evaluation, best epoch, wall time

Each epoch folder is written under a temporary name and renamed when complete, so a process
killed at any moment leaves only complete checkpoints; ``finetune`` with ``resume=True``
continues from the newest one. Per-epoch shuffling and seeding derive from (seed, epoch)
(``builder.core.seeding``), so a resumed run reproduces the weights of an uninterrupted one.

The loop uses ``accelerate.Accelerator`` for device placement, backward and gathering, so
``accelerate launch -m builder.interfaces.cli finetune ...`` runs it on several GPUs unchanged (only the main
process writes files).

Modules: ``config`` (settings, result, error), ``adapters`` (the adapter protocol, BLIP and the
shapes VQA net), ``loop`` (split, evaluation, ``finetune``), ``plots`` (loss curve, before/after).
The (image, question, answer) type and its dataset folder are ``builder.core.qa``'s.
"""

from builder.core.qa import QA, as_qa, load_qa_dataset, save_qa_dataset
from builder.methods.finetune.adapters import BlipVQAAdapter, ShapesVQAAdapter, VQAAdapter, make_adapter
from builder.methods.finetune.config import FinetuneConfig, FinetuneError, FinetuneResult
from builder.methods.finetune.loop import answers_match, evaluate, finetune, finetune_workspace, split_items
from builder.methods.finetune.plots import plot_before_after, plot_history

__all__ = ["QA", "BlipVQAAdapter", "FinetuneConfig", "FinetuneError", "FinetuneResult", "ShapesVQAAdapter",
           "VQAAdapter", "answers_match", "as_qa", "evaluate", "finetune", "finetune_workspace", "load_qa_dataset",
           "make_adapter", "plot_before_after", "plot_history", "save_qa_dataset", "split_items"]
