output "temporal_secret_arn" {
  description = "ARN of the Temporal secret (JSON keys: address, tls_cert, tls_key)."
  value       = aws_secretsmanager_secret.temporal.arn
}

output "temporal_secret_keys" {
  description = "JSON key of the Temporal secret that holds each environment variable's value."
  value = {
    VPP_TEMPORAL_ADDRESS  = "address"
    VPP_TEMPORAL_TLS_CERT = "tls_cert"
    VPP_TEMPORAL_TLS_KEY  = "tls_key"
  }
}
