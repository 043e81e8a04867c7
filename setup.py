"""Install cruncher: automated data processing for high-contrast imaging surveys."""
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent


def _version() -> str:
    for line in (_HERE / "cruncher" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise RuntimeError("cruncher/__init__.py has no __version__")


CORE = [
    "numpy>=1.26",
    "scipy>=1.11",
    "numba>=0.60",
    "astropy>=6.0",
    "pyklip>=2.7",
    "websockets>=15",
    "watchdog>=4",
    "SQLAlchemy>=2.0",
    "mysql-connector-python>=8.3",
    "matplotlib>=3.8",
    "tqdm>=4.66",
]
EXTRAS = {
    "mpi": ["mpi4py>=3.1", "mpich"],
    "gpu": ["cupy-cuda12x>=13"],
    "chat": ["slack_sdk>=3.27"],
    "test": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3", "ruff>=0.4", "mpi4py>=3.1",
             "mpich", "slack_sdk>=3.27"],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setup(
    name="cruncher",
    version=_version(),
    description="Automated data processing for high-contrast imaging surveys (a GPIES Data Cruncher)",
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["cruncher", "cruncher.*"]),
    package_data={"cruncher.recipes": ["templates/*.xml"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "cruncher = cruncher.cli:main",
            "reprocess = cruncher.cli:reprocess_main",
            "super_cruncher = cruncher.cli:super_cruncher_main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Astronomy",
    ],
)
