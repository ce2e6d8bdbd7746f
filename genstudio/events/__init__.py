"""The job event log and its delivery: live Server-Sent Events and signed webhooks."""
