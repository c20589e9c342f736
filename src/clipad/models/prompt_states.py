"""Object states in hand-made anomaly prompts (WinCLIP's lists, reused by AdaCLIP, AdaptCLIP and the baseline)."""

NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
