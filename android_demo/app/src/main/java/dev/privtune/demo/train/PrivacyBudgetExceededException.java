package dev.privtune.demo.train;

/** The round's steps would take the device's example-level epsilon past its budget; nothing was trained. */
public final class PrivacyBudgetExceededException extends Exception {
    private static final long serialVersionUID = 1L;
    private final double spent;
    private final double projected;
    private final double budget;

    /**
     * @param spent epsilon of the steps already recorded
     * @param projected epsilon after the planned steps
     * @param budget the limit (min of the device's and the round's budget)
     */
    public PrivacyBudgetExceededException(double spent, double projected, double budget, String message) {
        super(message);
        this.spent = spent;
        this.projected = projected;
        this.budget = budget;
    }

    /** Epsilon already spent. */
    public double spent() {
        return spent;
    }

    /** Epsilon after the refused round. */
    public double projected() {
        return projected;
    }

    /** The budget that refused it. */
    public double budget() {
        return budget;
    }
}
