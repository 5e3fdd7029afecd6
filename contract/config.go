package contract

// Federation strategies (FED_STRATEGY, section 5).
const (
	AllowNone = "allow-none"
	AllowAll  = "allow-all"
	AllowList = "allow-list"
)

// ValidStrategy reports whether s is one of the three strategies.
func ValidStrategy(s string) bool { return s == AllowNone || s == AllowAll || s == AllowList }

// DefaultComponents returns the default of FED_COMPONENTS: the components
// federated in both directions.
func DefaultComponents() []string { return []string{"brig", "galley", "cargohold"} }
