package dev.privtune.demo.train;

import dev.privtune.core.protocol.ArtifactManifest;
import dev.privtune.core.protocol.DpConfig;
import dev.privtune.core.protocol.RoundConfig;

/**
 * What this app checks before training a round ({@code ondevice.trainer.check_round_config}), plus the
 * seed methods it does not implement. DP-SAT, unit sparsity and rank masks need the trainable
 * parameters to be reset after every optimizer step, which ORT's Java API cannot do without reloading
 * the session; rather than train something other than what the server asked for, such rounds are
 * refused (the server's defaults use none of them).
 */
public final class RoundSupport {
    private RoundSupport() {}

    /**
     * @param nowUnix the current time (seconds)
     * @throws RoundNotSupportedException naming the first reason the round cannot run here
     */
    public static void check(RoundConfig round, ArtifactManifest manifest, double nowUnix) throws RoundNotSupportedException {
        String expected = manifest.manifestHash();
        if (!round.manifestHash().equals(expected)) {
            throw new RoundNotSupportedException("round " + round.roundId() + " is for bundle "
                    + round.manifestHash().substring(0, 12) + "..., this device has " + expected.substring(0, 12)
                    + "...; push the round's bundle first");
        }
        if (nowUnix > round.deadlineUnix()) {
            throw new RoundNotSupportedException("round " + round.roundId() + " closed at " + (long) round.deadlineUnix() + " (unix)");
        }
        DpConfig dp = round.dp();
        Long rank = dp.trainRank();
        if (rank != null && rank.longValue() != manifest.lora().rank()) {
            throw new RoundNotSupportedException("round " + round.roundId() + " trains rank " + rank + " of "
                    + manifest.lora().rank() + " (DyLoRA-style rank masks are not implemented in this app)");
        }
        if (dp.unitSparsity() != 0) {
            throw new RoundNotSupportedException("round " + round.roundId() + " asks for unit sparsity "
                    + dp.unitSparsity() + " (not implemented in this app)");
        }
        if (dp.dpSatRho() != 0) {
            throw new RoundNotSupportedException("round " + round.roundId() + " asks for DP-SAT rho "
                    + dp.dpSatRho() + " (not implemented in this app)");
        }
        if (dp.classWeights() != null) {
            throw new RoundNotSupportedException("round " + round.roundId() + " sets class weights "
                    + dp.classWeights() + " (not implemented in this app; serve such rounds to Python devices)");
        }
        try {
            manifest.file("optimizer_" + dp.optimizer(), "ort");
        } catch (IllegalArgumentException e) {
            throw new RoundNotSupportedException("round " + round.roundId() + " uses optimizer " + dp.optimizer()
                    + " but the bundle has no ORT optimizer model for it");
        }
    }
}
