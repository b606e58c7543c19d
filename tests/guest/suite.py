"""The kernel conformance suite: the few tests that prove each mechanism on a kernel,
run inside qemu guests on Debian's 6.1 and 6.12 (tests/guest/test_kernels.py) as well as
on the host with the rest of the suite.

Chosen for a TCG guest, where everything runs 50-70x slower and each Python start costs
seconds: one pytest process per kernel, few subprocesses, and no test with a fixed
deadline that only a fast machine meets.
"""

CONFORMANCE = [
    # probes and the redirect self-test: every feature line, no refusal
    "tests/test_doctor.py::test_doctor_names_every_feature_and_refuses_nothing_here",
    "tests/sockredir/test_selftest.py::test_probe_picks_the_build_the_btf_supports",
    "tests/sockredir/test_selftest.py::test_self_test_catches_a_build_that_claims_a_bound_it_lacks",
    # socket redirect: enable through the CLI, the kernel facts the proxy relies on,
    # byte order across the stack switch, and a hash-checked torture
    "tests/sockredir/test_selftest.py::test_enable_reports_the_build_and_the_self_test",
    "tests/sockredir/test_kernel_limits.py::test_fionread_counts_redirected_bytes",
    "tests/sockredir/test_kernel_limits.py::test_splice_does_not_see_redirected_data",
    "tests/sockredir/test_accel.py::test_a_socket_that_sent_via_the_stack_keeps_its_order",
    "tests/sockredir/test_torture.py::test_brief_torture_for_slow_machines",
    # shared memory: a sealed hand-over, and a peer that lies about the size
    "tests/shm/test_handover.py::test_region_hand_over_is_sealed_read_only_and_in_place",
    "tests/shm/test_handover.py::test_header_lying_about_size_is_refused",
    "tests/shm/test_handover.py::test_sealed_region_cannot_be_truncated_after_sending",
    # RCU: SharedTable readers against a writer, reuse only after a grace period
    "tests/rcu/test_table.py::test_writer_reuses_space_only_after_readers_pass_a_quiescent_state",
    "tests/rcu/test_table.py::test_dead_reader_does_not_block_grace_periods",
    # the node proxy's data path: splice through a pooled pipe
    "tests/proxy/test_splice_real.py::test_splice_through_a_pooled_pipe_moves_every_byte_in_order",
    # pod networking: the demo cluster, up / check / down, with BIRD
    "tests/podnet/test_cluster.py::test_up_check_down",
]
