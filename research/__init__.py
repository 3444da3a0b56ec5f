"""Research: experiments whose results were negative or superseded, kept runnable so that
every figure docs/results.md reports still names a command that exists (research/README.md
lists them). The installed package (``cir_module``) never imports this one; this one
imports the package.

- :mod:`research.cli`: ``python -m research.cli``: the ``cir`` verbs plus the research ones
  (``vlm-train`` with every stage, ``vlm-probe``, ``rar-distil``), with the research reranker
  kinds registered, in this process and in the services it starts (``CIR_PLUGINS``);
- :mod:`research.describe`: describe-and-verify reranking and its rationale chat backend;
- :mod:`research.distil`: the describe-and-verify query distiller;
- :mod:`research.vlm_probe`: what a stage's model can do;
- :mod:`research.judge_probe`, :mod:`research.scene_probe`: probes (``python -m ...``);
- ``*.sh``: the ablations (the image-tower fusion ablation, the from-scratch reranker, the
  injection table).
"""
