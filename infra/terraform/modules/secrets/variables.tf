variable "name" {
  description = "Name prefix of the environment."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the secret."
  type        = string
}

variable "temporal_address" {
  description = "Temporal frontend host:port (Temporal Cloud: <namespace>.<account>.tmprl.cloud:7233)."
  type        = string
}
