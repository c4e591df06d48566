"""The compiled part of the package: ctnetlink._batch, the per-entry hot path of ctsync in C.

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no
compiler or no Python headers), the install goes on and ctnetlink.batch runs its pure-Python
reference instead, saying why (``ctsyncctl status``; tests/ctsync/test_batch_codec.py fails
unless HAPAIR_CODEC=python says that is intended).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ctnetlink._batch",
            ["ctnetlink/_batch.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
