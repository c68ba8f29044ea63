variable "name" {
  description = "Name prefix of the environment (bucket names add the account id)."
  type        = string
}

variable "archive_prefix" {
  description = "Key prefix of the archive in the bucket: the contract's archive_prefix ([archive] s3_prefix)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the archive."
  type        = string
}

variable "infrequent_access_after_days" {
  description = "Days after which archived objects move to S3 Standard-IA."
  type        = number
  default     = 30
}

variable "glacier_after_days" {
  description = "Days after which archived objects move to S3 Glacier Instant Retrieval."
  type        = number
  default     = 180
}

variable "noncurrent_version_days" {
  description = "Days a replaced (noncurrent) object version is kept."
  type        = number
  default     = 30
}

variable "access_log_days" {
  description = "Days access logs are kept."
  type        = number
  default     = 365
}
