"""The portal: the HTTP API every user who is not an operator comes in through.

It serves ``/api/v1`` over the same service the Python API calls (one
:class:`~accelerator_prefect.client.AsyncAccelerator` per caller, sharing one
connection to Prefect), holds no rule of its own, and is the only door users
have: the Prefect API behind it is locked with an auth string they never see.

Example:
    >>> from accelerator_prefect.portal import create_app
    >>> app = create_app()  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8600)
"""

from accelerator_prefect.portal.app import create_app

__all__ = ["create_app"]
