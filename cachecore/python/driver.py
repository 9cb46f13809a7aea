# placeholder: replaced by the compiler-pool implementation
