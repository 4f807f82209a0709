"""``python -m underlay.mcp``: serve MCP on stdio for MCP clients that spawn a process.

The installation comes from the environment (``UNDERLAY_HOME``,
``UNDERLAY_DATABASE_URL`` ... as ``Config.load`` reads them); the caller's token from
``UNDERLAY_TOKEN``, or the local admin token when unset. Nothing is printed on stdout
but the protocol; failures are reported on stderr with exit status 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from underlay import errors


async def _main() -> None:
    from underlay.config import Config
    from underlay.kernel.kernel import Kernel
    from underlay.mcp.stdio import run_stdio

    kernel = await Kernel.open(Config.load())
    try:
        await run_stdio(kernel, os.environ.get("UNDERLAY_TOKEN") or kernel.admin_token())
    finally:
        await kernel.close()


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        asyncio.run(_main())
    except errors.UnderlayError as exc:
        print(f"underlay mcp: {exc.code}: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
