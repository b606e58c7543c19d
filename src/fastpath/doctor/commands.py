"""`fastpath doctor [--json] [--no-selftest]`: one line per kernel feature."""

from __future__ import annotations

from fastpath.output import add_json_flag


def register(sub) -> None:
    p = sub.add_parser("doctor", help="probe each kernel feature fastpath uses and name the "
                                      "fallback or refusal for what is missing")
    p.add_argument("--no-selftest", action="store_true",
                   help="skip the redirect self-test (it needs root and ~1 s; in a TCG "
                        "guest about a minute)")
    add_json_flag(p)
    p.set_defaults(func=_doctor)


def _doctor(args) -> int:
    from fastpath.doctor import report
    from fastpath.output import emit

    rep = report.examine(selftest=not args.no_selftest)
    emit(args, rep, report.render)
    return 0
