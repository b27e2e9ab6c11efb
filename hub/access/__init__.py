"""SB 34 compliance: policy, users and MFA, purpose-gated access, the chained access log, sharing, audits."""
