"""The benchmark's closing table: figures, ratios to the floor, and the issue's targets."""

from __future__ import annotations

import os
from typing import Any

MIB = 1024


class Report:
    def __init__(self, out: dict[str, Any]) -> None:
        self.out = out

    def targets(self) -> list[dict[str, Any]]:
        """Each target: what, the measured value, the bound, met or not (None: not measured)."""
        o = self.out
        floor = o["floor"]
        seq = o["sequential"]
        c32 = o["concurrent"]["32"]
        live = o["memory_live"]
        per_xc = (live["pss_kib"] - o["memory_idle_pss_kib"]) / live["count"]
        rows = [
            (
                "Request p50 / floor create",
                seq["request"]["p50_ms"] / floor["netlink_create_p50_ms"],
                "<=",
                2.0,
            ),
            (
                "Close p50 / floor delete",
                seq["close"]["p50_ms"] / floor["netlink_delete_p50_ms"],
                "<=",
                2.0,
            ),
            ("cross-connects/s, 2 workers, 32 clients", c32["request"]["per_s"], ">=", 400.0),
            ("teardown ms per cross-connect under load", 1000 / c32["close"]["per_s"], "<=", 2.0),
            ("PSS idle, MiB", o["memory_idle_pss_kib"] / MIB, "<=", 90.0),
            ("PSS per live cross-connect, KiB", per_xc, "<=", 10.0),
            (f"close-all of {live['count']}, s", live["close_all_s"], "<", 5.0),
            (
                "throughput 2 workers / 1 worker",
                o["workers"]["2"]["per_s"] / o["workers"]["1"]["per_s"],
                ">=",
                1.6,
            ),
        ]
        scale = o.get("scale")
        if scale:
            rows.append(
                (
                    f"Request p50 at {scale['live']} live / at 100 live",
                    scale["request_p50_at_scale_ms"] / scale["request_p50_at_100_ms"],
                    "<=",
                    1.2,
                )
            )
            rows.append(
                (
                    f"initial transfer at {scale['live']} live, s",
                    scale["initial_transfer_s"],
                    "<",
                    1.0,
                )
            )
        result = []
        for what, value, op, bound in rows:
            met = value <= bound if op == "<=" else value >= bound if op == ">=" else value < bound
            result.append(
                {"target": what, "value": round(value, 3), "op": op, "bound": bound, "met": met}
            )
        vpp = o.get("vpp")
        ratio = vpp["request_p50_ms"] / vpp["direct_p50_ms"] if vpp else None
        result.append(
            {
                "target": "VPP driver Request p50 / the same calls made directly",
                "value": None if ratio is None else round(ratio, 3),
                "op": "<=",
                "bound": 2.0,
                "met": None if ratio is None else ratio <= 2.0,
            }
        )
        return result

    def all_met(self) -> bool:
        return all(t["met"] is not False for t in self.targets())

    def print(self) -> None:
        o = self.out
        floor = o["floor"]
        print("\n== floor (same kernel work, this run) ==")
        print(
            f"  direct netlink: create p50 {floor['netlink_create_p50_ms']:.2f} ms, "
            f"delete p50 {floor['netlink_delete_p50_ms']:.2f} ms"
        )
        print(
            f"  ip -batch:      create {floor['ip_batch_create_ms']:.2f} ms/xc, "
            f"delete {floor['ip_batch_delete_ms']:.2f} ms/xc"
        )
        grpc_ms = floor["grpc_round_trip_p50_ms"]
        worker_ms = floor["worker_round_trip_p50_ms"]
        create = floor["netlink_create_p50_ms"]
        bound = create + grpc_ms + worker_ms
        print(
            f"  an empty gRPC round trip (grpcio, unix socket, another process): p50 {grpc_ms:.2f}"
            f" ms; an empty call to a worker process: p50 {worker_ms:.2f} ms"
        )
        print(
            f"  floor + both: {bound:.2f} ms = {bound / create:.2f}x the floor (the least a "
            "Request costs a forwarder that answers over grpcio and does netlink in a worker)"
        )
        print("\n== forwarder, local cross-connects (ms; x = ratio to the netlink floor) ==")
        print(f"  {'run':22} {'op':8} {'p50':>8} {'p90':>8} {'p99':>8} {'per s':>8} {'x floor':>8}")
        runs = (
            [("sequential", o["sequential"])]
            + [(f"{c} clients", v) for c, v in o["concurrent"].items()]
            + [("remote VXLAN (seq)", o["remote_vxlan"])]
        )
        for name, run in runs:
            for op, base in (
                ("request", floor["netlink_create_p50_ms"]),
                ("close", floor["netlink_delete_p50_ms"]),
            ):
                r = run[op]
                print(
                    f"  {name:22} {op:8} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
                    f"{r['per_s']:8.1f} {r['p50_ms'] / base:8.2f}"
                )
        live = o["memory_live"]
        if o.get("vpp"):
            v = o["vpp"]
            print(
                f"  VPP driver (real VPP): Request p50 {v['request_p50_ms']:.2f} ms, Close p50 "
                f"{v['close_p50_ms']:.2f} ms; the same calls made directly "
                f"{v['direct_p50_ms']:.2f} ms"
            )
        print("\n== memory and scale ==")
        anon = (live["pss_anon_kib"] - o["memory_idle_pss_anon_kib"]) / live["count"]
        print(
            f"  anonymous PSS (heaps, stacks) idle {o['memory_idle_pss_anon_kib'] / MIB:.1f} MiB, "
            f"+{anon:.1f} KiB per live cross-connect"
        )
        print(
            f"  PSS idle {o['memory_idle_pss_kib'] / MIB:.1f} MiB (main RSS "
            f"{o['memory_idle_main_rss_kib'] / MIB:.1f} MiB); with {live['count']} live "
            f"{live['pss_kib'] / MIB:.1f} MiB (main RSS {live['main_rss_kib'] / MIB:.1f} MiB); "
            f"close-all {live['close_all_s']:.2f} s; initial transfer "
            f"{live['initial_transfer_s']:.3f} s"
        )
        w1, w2 = o["workers"]["1"], o["workers"]["2"]
        print(
            f"  throughput at 32 clients: 1 worker {w1['per_s']:.1f}/s, 2 workers "
            f"{w2['per_s']:.1f}/s; cores kept busy (forwarder + clients, of "
            f"{os.cpu_count()}): {w1['cores_busy']:.2f} with 1 worker, "
            f"{w2['cores_busy']:.2f} with 2"
        )
        if o.get("scale"):
            s = o["scale"]
            print(
                f"  scale {s['live']} live: Request p50 {s['request_p50_at_scale_ms']:.2f} ms "
                f"(at 100 live {s['request_p50_at_100_ms']:.2f} ms); initial transfer "
                f"{s['initial_transfer_s']:.3f} s ({s['initial_transfer_xcons']} cross-connects); "
                f"close-all {s['close_all_s']:.1f} s"
            )
        print("\n== targets ==")
        for t in self.targets():
            state = "n/a " if t["met"] is None else "MET " if t["met"] else "MISS"
            value = "not measured" if t["value"] is None else f"{t['value']:.3f}"
            print(f"  [{state}] {t['target']}: {value} (target {t['op']} {t['bound']})")
