"""Packaging for erp-connector-dagster."""

from setuptools import find_packages, setup

DAGSTER_RELEASE = "1.13.27"
DAGSTER_LIBRARIES_RELEASE = "0.29.27"

setup(
    name="erp_connector_dagster",
    version="0.1.0",
    description="ERP/Finance connector for Scope 3 emissions, as a Dagster project",
    packages=find_packages(exclude=["erp_connector_dagster_tests*"]),
    include_package_data=True,
    package_data={
        "erp_connector_dagster": [
            "storage/migrations/*.sql",
            "reference/data/*",
            "methodology/rules/*",
            "exporter/*.yaml",
        ]
    },
    python_requires=">=3.10,<3.14",
    install_requires=[
        # The Dagster family moves together: one exact release (see README).
        f"dagster=={DAGSTER_RELEASE}",
        f"dagster-webserver=={DAGSTER_RELEASE}",
        f"dagster-postgres=={DAGSTER_LIBRARIES_RELEASE}",
        f"dagster-k8s=={DAGSTER_LIBRARIES_RELEASE}",
        "pandas>=2.2,<4",
        "pyarrow>=15,<30",
        "psycopg2-binary>=2.9.9,<3",
        "prometheus-client>=0.20,<1",
        "requests>=2.31,<3",
        "pydantic>=2.6,<3",
        "pyyaml>=6,<7",
        "click>=8.1,<9",
        "tqdm>=4.66,<5",
        "tenacity>=8.2,<10",
        "oauthlib>=3.2,<4",
        "requests-oauthlib>=1.3,<3",
        "werkzeug>=3,<4",
        "yoyo-migrations>=8.2,<10",
        "currencyconverter>=0.18.23,<1",
        "pgserver>=0.1.4,<0.2",
    ],
    extras_require={
        "dev": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "pytest-xdist>=3.5,<4",
            "ruff>=0.6",
        ],
    },
    entry_points={
        "console_scripts": ["erp-connector=erp_connector_dagster.cli:main"],
    },
)
