"""The console's pages and actions, with the roles each allows.

Roles are the JSON API's for the same operation (``api/v1.py`` ``roles_of``); tokens and
keys, which the API does not offer, are the operator's, as on the command line.
"""

from __future__ import annotations

from aiohttp import web

from exchange_node.api.v1 import OPERATOR, roles_of
from exchange_node.console import audit_pages as a
from exchange_node.console import officer_pages as d
from exchange_node.console import operator_pages as o
from exchange_node.console import protection_pages as dp
from exchange_node.console.app import (
    PAGE_TABLE,
    Page,
    guarded,
    home,
    sign_in,
    sign_in_form,
    sign_out,
    stylesheet,
)

PEERS = roles_of("peers")
DEAD = roles_of("deadLetters")
AUDIT = roles_of("auditEntries")
TOKENS = frozenset({OPERATOR})
ANY = frozenset().union(
    *(roles_of(op) for op in ("status", "auditEntries", "getMessage", "getCase", "getDocument"))
)

PAGES: tuple[Page, ...] = (
    Page("overview", "GET", "/overview", o.overview, roles_of("status"), "Overview"),
    Page("peers", "GET", "/peers", o.peers, PEERS, "Peers"),
    Page("peer", "GET", "/peers/{peer}", o.peer, PEERS),
    Page("peer_pause", "POST", "/peers/{peer}/pause", o.peer_pause, PEERS),
    Page("peer_resume", "POST", "/peers/{peer}/resume", o.peer_resume, PEERS),
    Page("peer_ping", "POST", "/peers/{peer}/ping", o.peer_ping, PEERS),
    Page("catchup_pause", "POST", "/peers/{peer}/catchup/pause", o.catchup_pause, PEERS),
    Page("catchup_resume", "POST", "/peers/{peer}/catchup/resume", o.catchup_resume, PEERS),
    Page("catchup_restart", "POST", "/peers/{peer}/catchup/restart", o.catchup_restart, PEERS),
    Page("peer_pin", "POST", "/peers", o.peer_pin, PEERS),
    Page("dead_letters", "GET", "/dead-letters", o.dead_letters, DEAD, "Dead letters"),
    Page("dead_letter_retry", "POST", "/dead-letters/{id}/retry", o.dead_letter_retry, DEAD),
    Page("dead_letter_acknowledge", "POST", "/dead-letters/{id}/acknowledge",
         o.dead_letter_acknowledge, DEAD),
    Page("audit", "GET", "/audit", a.audit, AUDIT, "Audit"),
    Page("audit_verify", "POST", "/audit/verify", a.audit_verify, AUDIT),
    Page("audit_verification", "GET", "/audit/verification", a.audit_verification, AUDIT),
    Page("audit_bundle", "POST", "/audit/bundle", a.audit_bundle, AUDIT),
    Page("audit_bundle_export", "GET", "/audit/bundles/{id}", a.audit_bundle_export, AUDIT),
    Page("audit_bundle_file", "GET", "/audit/bundles/{id}/file", a.audit_bundle_file, AUDIT),
    Page("documents", "GET", "/documents", d.documents, roles_of("getDocument"), "Documents"),
    Page("documents_batch", "POST", "/documents", d.documents_batch, roles_of("lookupDocuments")),
    Page("cases", "GET", "/cases", d.cases, roles_of("getCase"), "Cases"),
    Page("case_open", "GET", "/cases/open", d.case_open, roles_of("getCase")),
    Page("case", "GET", "/cases/{ref}", d.case, roles_of("getCase")),
    Page("case_step", "POST", "/cases/{ref}/events", d.case_step, roles_of("addCaseEvent")),
    Page("case_erasure", "GET", "/cases/{ref}/erasure", dp.case_erasure, roles_of("eraseCase")),
    Page("case_erase", "POST", "/cases/{ref}/erasure", dp.case_erase, roles_of("eraseCase")),
    Page("protection", "GET", "/protection", dp.protection, roles_of("reviews"), "Data protection"),
    Page("review_keep", "POST", "/protection/keep", dp.review_keep, roles_of("keepRecord")),
    Page("hold_place", "POST", "/protection/holds", dp.hold_place, roles_of("placeHold")),
    Page("hold_release", "POST", "/protection/holds/release", dp.hold_release,
         roles_of("releaseHold")),
    Page("subject_reports", "GET", "/subject-reports", dp.subject_report_form,
         roles_of("subjectReport"), "Subject access"),
    Page("subject_report", "POST", "/subject-reports", dp.subject_report, roles_of("subjectReport")),
    Page("subject_report_file", "GET", "/subject-reports/{id}/report.json", dp.subject_report_file,
         roles_of("subjectReport")),
    Page("subject_report_text", "GET", "/subject-reports/{id}/report.txt", dp.subject_report_text,
         roles_of("subjectReport")),
    Page("messages", "GET", "/messages", a.messages, roles_of("getMessage"), "Messages"),
    Page("message_proof", "GET", "/messages/{message_id}/{peer}/proof", a.message_proof,
         roles_of("getMessage")),
    Page("tokens", "GET", "/tokens", o.tokens, TOKENS, "Tokens and keys"),
    Page("token_create", "POST", "/tokens", o.token_create, TOKENS),
    Page("token_revoke", "POST", "/tokens/{id}/revoke", o.token_revoke, TOKENS),
    Page("keys_rotate", "POST", "/keys/rotate", o.keys_rotate, TOKENS),
    Page("sign_out", "POST", "/sign-out", sign_out, ANY),
)  # fmt: skip


def add_pages(app: web.Application) -> None:
    app[PAGE_TABLE] = PAGES
    app[a.VERIFICATION] = {}
    app[dp.REPORTS] = {}
    app[a.BUNDLES] = {}
    app.on_cleanup.append(a.remove_bundle_files)
    app.router.add_get("", home)
    app.router.add_get("/", home)
    app.router.add_get("/sign-in", sign_in_form)
    app.router.add_post("/sign-in", sign_in)
    app.router.add_get("/console.css", stylesheet)
    for p in PAGES:
        app.router.add_route(p.method, p.path, guarded(p))
