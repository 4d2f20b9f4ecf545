"""Two operator instances, each watching its own namespaces, share one MFA identity.

Each shard keeps its own MFA session in memory; the per-device Lease (write-ahead claim of
the TOTP time step) makes them take turns, so no code is ever sent twice.
"""

from __future__ import annotations

from devstack.manifests import assumed_role_credential, mfa_identity
from devstack.operator_run import OperatorProcess
from devstack.seed import RoleSpec, seed_identity


def test_namespace_shards_share_one_identity_without_reusing_a_code(stack, kube, operator, unique, emulator_admin,
                                                                   issued):
    ns_a, ns_b = kube.namespace(f"shard-a-{unique}"), kube.namespace(f"shard-b-{unique}")
    seeded = seed_identity(stack, f"shard-{unique}", totp_period=3, roles=[RoleSpec(f"app-shard-{unique}")])
    kube.apply_identity(mfa_identity(stack, seeded, allowed_namespaces=[ns_a, ns_b], mfa_modes=["session", "direct"]))
    operator.stop()  # the cluster-wide instance steps aside; two namespace shards take over
    shards = [OperatorProcess(stack, name=f"operator-shard-{s}", kubeconfig=operator.kubeconfig,
                              extra_args=["--namespace", ns]) for s, ns in (("a", ns_a), ("b", ns_b))]
    try:
        for shard in shards:
            shard.start(wait=False)
        for shard in shards:
            shard.wait_healthy()
        for i in range(4):  # direct mode: every credential spends a code, both shards at once
            for ns in (ns_a, ns_b):
                kube.create_credential(assumed_role_credential(ns, f"d{i}", seeded.name, seeded.role_arns[0],
                                                               mfa="direct"))
        for i in range(4):
            for ns in (ns_a, ns_b):
                kube.wait_ready(ns, f"d{i}", timeout=120)
                issued.add_secret(kube.secret(ns, f"d{i}"))
        for ns in (ns_a, ns_b):  # session mode: one MFA session per shard
            kube.create_credential(assumed_role_credential(ns, "s", seeded.name, seeded.role_arns[0]))
            kube.wait_ready(ns, "s", timeout=120)
            issued.add_secret(kube.secret(ns, "s"))
        counters = emulator_admin.counters()
        steps = [c["step"] for c in counters["accepted_codes"] if c["serial"] == seeded.mfa_serial]
        assert len(steps) == 10 and len(set(steps)) == 10  # 8 direct + 2 sessions, all distinct steps
        assert counters["codes_reused_by_serial"].get(seeded.mfa_serial, 0) == 0
        assert counters["codes_refused_by_serial"].get(seeded.mfa_serial, 0) == 0
        for shard, ns in zip(shards, (ns_a, ns_b), strict=True):
            log = shard.log_text()
            assert f"{ns}/d0" in log
            assert f"{ns_b if ns == ns_a else ns_a}/d0" not in log  # each shard handled only its namespace
    finally:
        for shard in shards:
            shard.stop()
        operator.start()
