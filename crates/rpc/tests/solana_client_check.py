"""Points solana-py (the `solana` package on PyPI, with solders' typed responses) at a
huione RPC server and checks that every method a monitor uses parses into the library's
own types without errors.

Usage: python solana_client_check.py URL IDENTITY
Exit status 0 when every check passed; otherwise prints what failed and exits 1.
"""

import asyncio
import sys

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Processed
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
    GetEpochScheduleResp,
    GetGenesisHashResp,
    GetFirstAvailableBlockResp,
    MinimumLedgerSlotResp,
    GetTransactionCountResp,
)
from solders.transaction_status import UiConfirmedBlock

FAILURES = []


def check(name, cond, detail=""):
    if cond:
        print(f"ok   {name}")
    else:
        print(f"FAIL {name} {detail}")
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
    vote_program = Pubkey.from_string("Vote111111111111111111111111111111111111111")
    async with AsyncClient(url, timeout=10) as client:
        # solana-py exposes getHealth as is_connected(): it sends getHealth and parses the
        # reply as solders' GetHealthResp.
        try:
            healthy = await client.is_connected()
            check("getHealth (is_connected) parses as GetHealthResp == ok", healthy is True, repr(healthy))
        except Exception as e:  # noqa: BLE001
            check("getHealth (is_connected)", False, f"raised {type(e).__name__}: {e}")

        r = await call("getSlot", client.get_slot(), GetSlotResp)
        r2 = await call("getSlot processed", client.get_slot(Processed), GetSlotResp)
        if r and r2:
            check("getSlot values", r.value == 168 and r2.value == 200, f"{r.value} {r2.value}")

        r = await call("getIdentity", client.get_identity(), GetIdentityResp)
        if r:
            check("getIdentity value", str(r.value.identity) == identity, str(r.value.identity))

        r = await call("getVersion", client.get_version(), GetVersionResp)
        if r:
            check("getVersion fields", r.value.solana_core == "0.1.0" and r.value.feature_set == 42, repr(r.value))

        r = await call("getEpochInfo", client.get_epoch_info(Processed), GetEpochInfoResp)
        if r:
            v = r.value
            check(
                "getEpochInfo fields",
                (v.absolute_slot, v.block_height, v.epoch, v.slot_index, v.slots_in_epoch, v.transaction_count)
                == (200, 190, 3, 8, 64, 1234),
                repr(v),
            )

        r = await call("getVoteAccounts", client.get_vote_accounts(), GetVoteAccountsResp)
        if r:
            cur = r.value.current
            check("getVoteAccounts current", len(cur) >= 1, repr(r.value))
            a = cur[0]
            check(
                "getVoteAccounts fields",
                isinstance(a.vote_pubkey, Pubkey)
                and isinstance(a.node_pubkey, Pubkey)
                and a.activated_stake > 0
                and isinstance(a.epoch_vote_account, bool)
                and isinstance(a.epoch_credits[0], tuple)
                and a.last_vote > 0,
                repr(a),
            )
            check("getVoteAccounts delinquent", len(r.value.delinquent) == 1, repr(r.value.delinquent))

        r = await call("getClusterNodes", client.get_cluster_nodes(), GetClusterNodesResp)
        if r:
            n = r.value[0]
            check(
                "getClusterNodes fields",
                len(r.value) == 3 and str(n.pubkey) == identity and n.gossip == "127.0.0.1:8000"
                and n.shred_version == 7 and n.feature_set == 42,
                repr(n),
            )

        r = await call("getLeaderSchedule", client.get_leader_schedule(200), GetLeaderScheduleResp)
        if r:
            sched = r.value
            check("getLeaderSchedule", sched is not None and len(sched) == 3, repr(sched))
            if sched:
                check(
                    "getLeaderSchedule keys are Pubkeys",
                    all(isinstance(k, Pubkey) for k in sched) and sum(len(v) for v in sched.values()) == 64,
                )

        r = await call("getBlockHeight", client.get_block_height(Confirmed), GetBlockHeightResp)
        if r:
            check("getBlockHeight value", r.value == 189, repr(r.value))

        for enc in ["json", "jsonParsed", "base64", "base58"]:
            r = await call(
                f"getBlock {enc}",
                client.get_block(196, encoding=enc, max_supported_transaction_version=0, commitment=Confirmed),
                GetBlockResp,
            )
            if not r:
                continue
            b = r.value
            check(f"getBlock {enc} is a block", isinstance(b, UiConfirmedBlock), repr(b))
            if not isinstance(b, UiConfirmedBlock):
                continue
            check(
                f"getBlock {enc} header",
                b.parent_slot == 194 and b.block_height == 186 and b.block_time == 1_700_000_196,
                repr(b),
            )
            txs = b.transactions or []
            check(f"getBlock {enc} has the votes", len(txs) == 2, repr(txs))
            if enc == "json" and txs:
                msg = txs[0].transaction.message
                keys = msg.account_keys
                ix = msg.instructions[0]
                check(
                    "getBlock json vote instruction",
                    keys[ix.program_id_index] == vote_program,
                    repr(msg),
                )
            if enc == "base64" and txs:
                # solders decodes the wire bytes into a real Solana transaction.
                tx = txs[0].transaction
                msg = tx.message
                check(
                    "getBlock base64 decodes to a vote transaction",
                    vote_program in msg.account_keys and len(tx.signatures) == 1,
                    repr(tx),
                )

        # A missing block is an RPC error, surfaced as such.
        try:
            r = await client.get_block(10_000, commitment=Confirmed)
            check("getBlock missing slot is an error", False, repr(r))
        except Exception as e:  # noqa: BLE001
            check("getBlock missing slot is an error", "Block not available" in str(e), str(e))

        await call("getEpochSchedule", client.get_epoch_schedule(), GetEpochScheduleResp)
        await call("getGenesisHash", client.get_genesis_hash(), GetGenesisHashResp)
        await call("getFirstAvailableBlock", client.get_first_available_block(), GetFirstAvailableBlockResp)
        await call("minimumLedgerSlot", client.get_minimum_ledger_slot(), MinimumLedgerSlotResp)
        await call("getTransactionCount", client.get_transaction_count(), GetTransactionCountResp)

    if FAILURES:
        print(f"{len(FAILURES)} checks failed: {', '.join(FAILURES)}")
        return 1
    print("all solana-py checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
