variable "name" {
  description = "Name prefix of the environment (the contract's queue prefix)."
  type        = string
}
