# The Temporal endpoint and its mTLS client certificate: one JSON secret
# {"address": "...", "tls_cert": "PEM", "tls_key": "PEM"}. Terraform writes the address; the certificate
# and key are put in out of band (README) and Terraform leaves them alone afterwards.

resource "aws_secretsmanager_secret" "temporal" {
  #checkov:skip=CKV2_AWS_57:Temporal Cloud client certificates are issued and rotated by the operator (README, rotation); there is no rotation function for them.
  name                    = "${var.name}/temporal"
  description             = "Temporal endpoint (host:port) and mTLS client certificate of ${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "temporal" {
  secret_id = aws_secretsmanager_secret.temporal.id
  secret_string = jsonencode({
    address  = var.temporal_address
    tls_cert = ""
    tls_key  = ""
  })
  lifecycle {
    ignore_changes = [secret_string]
  }
}
