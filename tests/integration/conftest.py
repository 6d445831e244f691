"""Fixtures of the integration tests: a local Apache Spark session."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local SparkSession (two cores, no UI, bound to loopback, two shuffle partitions), shared by the session.

    Spark runs on the JVM: without ``java`` the tests that use it are skipped (make test installs a JRE)."""
    if shutil.which("java") is None:
        pytest.skip("Java is not installed: Spark needs a JRE (make test installs openjdk-17-jre-headless as root)")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors' Python imports this package
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("customer-context-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.session.timeZone", "UTC")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
