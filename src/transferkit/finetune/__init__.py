"""Fine-tuning building blocks used by the ``finetune`` method (and reusable by others).

* :mod:`~transferkit.finetune.groups`: layer-group assignment, freezing, discriminative LR;
* :mod:`~transferkit.finetune.unfreeze`: gradual unfreezing as a resumable callback;
* :mod:`~transferkit.finetune.params`: the regularisers' config schemas;
* :mod:`~transferkit.finetune.regularizers`: L2-SP, DELTA, BSS and LwF as one module;
* :mod:`~transferkit.finetune.delta_fit`: DELTA's supervised attention, fitted at start;
* :mod:`~transferkit.finetune.peft`: LoRA / IA3 / LoHa adapters.

Submodules are imported on demand (``peft`` pulls in Hugging Face ``peft``).
"""
