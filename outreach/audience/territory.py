"""Transitional: the former territory module's names, re-exported while its last importers
move to assignment_plan, assignment_rules, assignments and handover. To be deleted."""

from outreach.audience.assignment_plan import *  # noqa: F403
from outreach.audience.assignment_plan import AssignmentPlan, fmt_churn  # noqa: F401
from outreach.audience.assignment_rules import plan_assignments  # noqa: F401
from outreach.audience.assignments import (  # noqa: F401
    Applied,
    HistoryRow,
    apply_plan,
    current_assignments,
    current_owners,
    history,
    persisted_owners,
)
from outreach.audience.handover import (  # noqa: F401
    check_handover_target,
    handover_campaign,
    handover_moves,
    write_handover_campaign,
)

Plan = AssignmentPlan
