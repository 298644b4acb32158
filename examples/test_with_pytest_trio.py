"""pytest-trio tests, unchanged, on io_uring: the backend is a pytest option.

    pip install pytest-trio
    pytest examples/test_with_pytest_trio.py --trio-backend=uring

(or ``trio_backend = uring`` in the ini file). Nothing in this file mentions
trio_uring: trio_uring's pytest plugin installs the backend for the session.
"""

from functools import partial

import pytest
import trio
import trio.testing

pytestmark = pytest.mark.trio  # or `trio_mode = true` in the ini file


async def echo(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


@pytest.fixture
async def echo_port(nursery: trio.Nursery) -> int:
    """An echo server for the test (pytest-trio's ``nursery`` fixture runs it)."""
    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_backend() -> None:
    print("backend:", trio.lowlevel.current_statistics().io_statistics.backend)


async def test_echo(echo_port: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", echo_port) as stream:
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"


async def test_timeout_with_the_autojump_clock(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(3600) as scope:  # an hour, instantly: the clock jumps
        await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_memory_stream_pair() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"x")
    assert await server.receive_some() == b"x"
