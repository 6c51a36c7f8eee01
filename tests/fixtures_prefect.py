"""One Prefect test harness (a temporary server, ~10 s to start) shared by the whole session."""

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(home))
    mp.setenv("PREFECT_LOCAL_STORAGE_PATH", str(home / "results"))
    mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mp.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness

    # 300 s: on the shared 2-core machine under load the server took over 120 s to answer
    with prefect_test_harness(server_startup_timeout=300):
        yield home
    mp.undo()


def drain_prefect_workers() -> None:
    """Flush Prefect's process-wide log and event workers to the current API.

    Call it before stopping a server that a test started: the workers are singletons, and ones
    left pointing at a stopped server make a later drain (the harness's teardown) wait forever.
    """
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:
            pass  # the log worker was never started
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())
