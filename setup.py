"""fairseq-admin: Admin (Adaptive Model Initialization) as a fairseq plugin.

Install with ``bash scripts/setup.sh``: torch and fairseq-fixed must be installed first and
in a particular way (see that script), which ``pip install`` alone cannot do.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="fairseq-admin",
    version="0.1.0",
    description="Admin (Liu et al., EMNLP 2020) for fairseq: profiled shortcut scaling for deep Post-LN Transformers",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_admin", "fairseq_admin.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "fairseq-fixed==0.12.3.1",
        "sacrebleu>=2.0",
        "sentencepiece",
        "hydra-core",
        "matplotlib",
        "sacremoses>=0.1",  # Moses tokenization of the paper's data pipelines
        "subword-nmt>=0.3.8",  # the paper's BPE
        "tensorboardX>=2.6",  # --tensorboard-logdir
    ],
    extras_require={"test": ["pytest", "ruff"]},
    entry_points={
        "console_scripts": [
            "fairseq-admin-dir=fairseq_admin:print_user_dir",
            "fairseq-admin-prepare=fairseq_admin.prepare:main",
            "fairseq-admin-export=fairseq_admin.export:main",
            "fairseq-admin-corpus=fairseq_admin.corpora:main",
            "fairseq-admin-average=fairseq_admin.average:main",
            "fairseq-admin-evaluate=fairseq_admin.evaluate:main",
            "fairseq-admin-summary=fairseq_admin.summary:main",
        ],
    },
)
