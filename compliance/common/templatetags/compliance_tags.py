from django import template

register = template.Library()

_EVENT_LABELS = {
    "request.received": "Request received",
    "request.duplicate": "Same request filed again (merged)",
    "request.verified": "E-mail address confirmed",
    "request.triaged": "Training data searched and risk scored",
    "request.assigned": "Assigned to an officer",
    "request.approved": "Erasure approved; output filter switched on",
    "request.refused": "Erasure refused",
    "request.extended": "Deadline extended (Art. 12(3))",
    "request.unlearning": "Removing the data from the model",
    "request.verifying": "Testing the new model for leaks",
    "request.needs_decision": "Tests could not confirm the removal; an officer decides the next step",
    "request.escalation_decided": "An officer decided the next step",
    "request.suppressed": "Closed without a certificate; output filter stays on",
    "request.completed": "Completed; certificate issued",
    "request.withdrawn": "Withdrawn",
    "request.purged": "Personal data destroyed",
    "guard.rules_created": "Output filter rules created",
    "guard.rules_rederived": "Output filter rules derived again",
}


@register.filter
def event_label(event_type: str) -> str:
    """A person-readable label for an audit event type (unknown types are shown as they are)."""
    return _EVENT_LABELS.get(event_type, event_type)
