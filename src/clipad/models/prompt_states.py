"""Object states and templates of hand-made anomaly prompts (WinCLIP's lists, reused by AdaCLIP, AdaptCLIP,
WinCLIP and the baseline)."""

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
# WinCLIP's own 4 anomalous states (AdaCLIP's list without "broken {}"), used by WinCLIP and AdaptCLIP.
WINCLIP_ANOMALOUS_STATES = tuple(state for state in ABNORMAL_STATES if state != "broken {}")
# WinCLIP's 21 templates as anomalib publishes them: "a jpeg corrupted photo of the {}." appears twice and
# the "a" variant is missing; kept as it is (the only maintained implementation of the method).
WINCLIP_TEMPLATES = (
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)
