"""A kernel client for running notebooks headless (papermill, nbclient) that does not sleep through a reply.

jupyter_client waits for a kernel's messages with pyzmq's asyncio ``poll``. That wait can miss the wake-up for a
message that has already arrived (seen here with cells that create ipywidgets; reported as jupyter/nbclient#312):
the poll then sleeps until its timeout, for nbclient the whole cell timeout (10 minutes in our tests), and only
its final check finds the message, so the cell "takes" exactly the timeout and then succeeds. Waiting in slices of
a second bounds such a miss to a second. Jupyter, Colab and VS Code are not affected: they use their own clients.

Use it through papermill: ``papermill.execute_notebook(..., kernel_manager_class=SlicedPollKernelManager)``.
"""

from __future__ import annotations

import time
from queue import Empty

from jupyter_client.asynchronous.client import AsyncKernelClient

try:
    from jupyter_client.channels import AsyncZMQSocketChannel
except ImportError:  # jupyter_client 7 (Colab's 7.4.9): its one channel class has the asynchronous get_msg
    from jupyter_client.channels import ZMQSocketChannel as AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type, default

POLL_SLICE_S = 1.0


class SlicedPollChannel(AsyncZMQSocketChannel):
    """``get_msg`` that waits in slices of ``POLL_SLICE_S``: each slice ends with a fresh check of the socket."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=POLL_SLICE_S if left is None else min(POLL_SLICE_S, left))
            except Empty:
                if left is not None and left <= POLL_SLICE_S:
                    raise


class SlicedPollKernelClient(AsyncKernelClient):
    shell_channel_class = Type(SlicedPollChannel)
    iopub_channel_class = Type(SlicedPollChannel)
    stdin_channel_class = Type(SlicedPollChannel)
    control_channel_class = Type(SlicedPollChannel)


class SlicedPollKernelManager(AsyncKernelManager):
    @default("client_factory")
    def _client_factory_default(self) -> type:
        return SlicedPollKernelClient
