variable "name" {
  description = "Name prefix of the environment."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the database (two availability zones at least)."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key encrypting storage, Performance Insights and the DATABASE_URL secret."
  type        = string
}

variable "engine_major_version" {
  description = "PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "allocated_storage_gb" {
  description = "Initial storage (GiB)."
  type        = number
  default     = 20
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling (GiB)."
  type        = number
  default     = 200
}

variable "database_name" {
  description = "Name of the database."
  type        = string
  default     = "openvpp"
}

variable "master_username" {
  description = "Master user name."
  type        = string
  default     = "openvpp"
}

variable "multi_az" {
  description = "Standby in a second availability zone."
  type        = bool
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window), 1 to 35."
  type        = number
}

variable "deletion_protection" {
  description = "Refuse to delete the instance."
  type        = bool
  default     = true
}
