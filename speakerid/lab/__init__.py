"""Training and evaluation: beside the runtime chain, never on its path.

Corpora and splits (``data``), the training loop (``train``) with its settings (``config``),
losses, teachers, validation and WCCN back-end, data-parallel runs (``distributed``), and the
evaluation side: trials and error rates (``metrics``), k-way tasks (``kway``), plots and
``speakerid evaluate``.
Nothing in ``audio -> features -> model -> embed -> store -> search -> service`` imports this
package; only the CLI's lab commands (``train``, ``whiten``, ``evaluate``) and the benchmarks do.
"""
