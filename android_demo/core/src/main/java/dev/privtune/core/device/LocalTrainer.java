package dev.privtune.core.device;

import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import java.io.IOException;
import java.util.Map;

/**
 * Runs a round's local DP-SGD steps on the device's own examples. The Android app implements it with
 * the ONNX Runtime Training API (TrainStep/OptimizerStep with the bundle's in-graph clipping inputs
 * and noise from {@link dev.privtune.core.dp.SecureRandomBytes}); core only defines the contract.
 *
 * <p>Contract (as the Python trainer): every parameter comes from {@code round.dp()} (a device never
 * picks its own); each step is recorded in {@code ledger} before its noised gradient is applied; only
 * the adapter (LoRA + head) tensors change. Epsilon is not computed here (see {@link LocalLedger}).
 */
public interface LocalTrainer {
    /**
     * Trains from {@code global} for {@code round.dp().localSteps()} steps.
     *
     * @param global the round's global adapter (float32, manifest order)
     * @throws IOException when the ledger or a checkpoint cannot be written
     */
    TrainingResult train(RoundConfig round, Map<String, Tensor> global, LocalLedger ledger) throws IOException;
}
