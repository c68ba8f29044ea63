variable "name" {
  description = "Name prefix of the environment."
  type        = string
}

variable "cidr_block" {
  description = "CIDR block of the VPC (split in half: public subnets, private subnets)."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones to span, by name (2 or 3; pinned so AWS adding a zone changes nothing)."
  type        = list(string)
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per availability zone (true) or a single shared one (false, cheaper)."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key encrypting the flow-log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the flow logs (days)."
  type        = number
}
