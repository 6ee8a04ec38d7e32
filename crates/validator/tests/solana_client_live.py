"""Points solana-py (PyPI `solana`, with solders' typed responses) at a LIVE huione node
and checks that what a monitor reads parses into the library's own types.

Usage: python solana_client_live.py URL IDENTITY
Exit status 0 when every check passed; otherwise prints what failed and exits 1.
"""

import asyncio
import sys

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetBlockHeightResp,
    GetBlockResp,
    GetClusterNodesResp,
    GetEpochInfoResp,
    GetIdentityResp,
    GetLeaderScheduleResp,
    GetSlotResp,
    GetVersionResp,
    GetVoteAccountsResp,
)
from solders.transaction_status import UiConfirmedBlock

FAILURES = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f" {detail}"))
    if not cond:
        FAILURES.append(name)


async def call(name, coro, resp_type):
    try:
        resp = await coro
    except Exception as e:  # noqa: BLE001 - any exception is a failure to report
        check(name, False, f"raised {type(e).__name__}: {e}")
        return None
    check(f"{name} parses as {resp_type.__name__}", isinstance(resp, resp_type), repr(resp))
    return resp


async def main(url, identity):
    async with AsyncClient(url, timeout=10) as client:
        check("getHealth (is_connected)", await client.is_connected() is True)
        fin = await call("getSlot finalized", client.get_slot(Finalized), GetSlotResp)
        proc = await call("getSlot processed", client.get_slot(Processed), GetSlotResp)
        if fin and proc:
            check("slots advance", 0 < fin.value <= proc.value, f"{fin.value} {proc.value}")
        r = await call("getIdentity", client.get_identity(), GetIdentityResp)
        if r:
            check("getIdentity value", str(r.value.identity) == identity, str(r.value.identity))
        await call("getVersion", client.get_version(), GetVersionResp)
        r = await call("getEpochInfo", client.get_epoch_info(), GetEpochInfoResp)
        if r:
            check("getEpochInfo slot", r.value.absolute_slot > 0, repr(r.value))
        r = await call("getVoteAccounts", client.get_vote_accounts(), GetVoteAccountsResp)
        if r:
            check("getVoteAccounts current", len(r.value.current) == 3, repr(r.value))
            check("every account voted", all(a.last_vote > 0 for a in r.value.current), repr(r.value))
        r = await call("getClusterNodes", client.get_cluster_nodes(), GetClusterNodesResp)
        if r:
            check("getClusterNodes peers", len(r.value) >= 2, repr(r.value))
        r = await call("getLeaderSchedule", client.get_leader_schedule(), GetLeaderScheduleResp)
        if r:
            check("getLeaderSchedule keys", r.value is not None and all(isinstance(k, Pubkey) for k in r.value))
        await call("getBlockHeight", client.get_block_height(Confirmed), GetBlockHeightResp)
        # A recent block with votes in it.
        found = False
        start = proc.value if proc else 0
        for slot in range(start, max(start - 40, 0), -1):
            try:
                b = await client.get_block(slot, encoding="json", max_supported_transaction_version=0)
            except Exception:  # noqa: BLE001 - a skipped slot is an error reply
                continue
            if isinstance(b, GetBlockResp) and isinstance(b.value, UiConfirmedBlock) and b.value.transactions:
                found = True
                print(f"ok   getBlock {slot}: {len(b.value.transactions)} vote transactions")
                break
        check("getBlock: a recent block with votes parses as UiConfirmedBlock", found)
    if FAILURES:
        print(f"{len(FAILURES)} checks failed: {FAILURES}")
        sys.exit(1)
    print("all solana-py checks passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
